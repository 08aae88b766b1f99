"""Choosing the evolution operation: uniform by default, weighted on request, never global randomness.

Every choice is a pure function of (run seed, record id, epoch), so it is the same at any concurrency
and across resume.
"""

from __future__ import annotations

import hashlib
import random

from .templates import TemplateSet


def rng_for(*key: object) -> random.Random:
    """A private generator seeded from a stable digest of `key`."""
    digest = hashlib.sha256(repr(key).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def parse_weights(spec: str | None, templates: TemplateSet) -> dict[str, float]:
    """`"add_constraints=2,mutation=1"` -> weights; operations not named get 0 when any is named."""
    ops = templates.ops
    if not spec:
        return {op: 1.0 for op in ops}
    weights = {op: 0.0 for op in ops}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if name not in weights:
            raise ValueError(f"unknown operation '{name}' for template set '{templates.name}' (has: {', '.join(ops)})")
        try:
            weights[name] = float(value)
        except ValueError:
            raise ValueError(f"weight for '{name}' must be a number, got '{value}'") from None
    if sum(weights.values()) <= 0 or any(w < 0 for w in weights.values()):
        raise ValueError("operation weights must be non-negative and not all zero")
    return weights


def choose_operation(weights: dict[str, float], run_seed: int, record_id: str, epoch: int) -> str:
    ops = [op for op, w in weights.items() if w > 0]
    return rng_for("op", run_seed, record_id, epoch).choices(ops, weights=[weights[o] for o in ops])[0]


def choose_data_format(formats: list[str], run_seed: int, record_id: str, epoch: int) -> str:
    return rng_for("format", run_seed, record_id, epoch).choice(formats)


def request_seed(run_seed: int, record_id: str, purpose: str) -> int:
    """A per-request sampling seed, so a local model samples the same tokens at any batch size."""
    return rng_for("sample", run_seed, record_id, purpose).randrange(2**31)
