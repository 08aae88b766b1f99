"""Choosing the evolution operation: uniform by default, weighted on request, never global randomness.

Every choice is a pure function of (run seed, record id, epoch), so it is the same at any concurrency
and across resume.
"""

from __future__ import annotations

from ..kv import parse_pairs
from ..records import rng_for
from .templates import TemplateSet


def parse_weights(spec: str | None, templates: TemplateSet) -> dict[str, float]:
    """`"add_constraints=2,mutation=1"` -> weights; operations not named get 0 when any is named."""
    ops = templates.ops
    if not spec:
        return {op: 1.0 for op in ops}
    given = parse_pairs(spec, "--ops")
    for name in given:
        if name not in ops:
            raise ValueError(f"unknown operation '{name}' for template set '{templates.name}' (has: {', '.join(ops)})")
    weights = {op: given.get(op, 0.0) for op in ops}
    if sum(weights.values()) <= 0:
        raise ValueError("operation weights must be non-negative and not all zero")
    return weights


def choose_operation(weights: dict[str, float], run_seed: int, record_id: str, epoch: int) -> str:
    ops = [op for op, w in weights.items() if w > 0]
    return rng_for("op", run_seed, record_id, epoch).choices(ops, weights=[weights[o] for o in ops])[0]


def choose_data_format(formats: list[str], run_seed: int, record_id: str, epoch: int) -> str:
    return rng_for("format", run_seed, record_id, epoch).choice(formats)
