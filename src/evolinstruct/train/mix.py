"""The data mix: which examples train, which are held out, and the statistics of that choice.

Order of operations: filter by score (`--min-score`), weigh by epoch and operation (`--epoch-weights`,
`--op-weights`; weight 0 drops), sample N without replacement with probability proportional to weight
(`--sample`, seeded), then hold out whole lineages (`--eval-fraction`): an evolution never lands in
eval while its seed or a sibling trains, so the eval loss measures something the model did not see.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..kv import parse_pairs
from ..rundir import write_atomic_lines, write_json
from .data import UNKNOWN, Example

MIX_FILE = "mix.jsonl"
MIX_STATS = "mix_stats.json"


@dataclass
class MixSpec:
    sample: int | None = None
    seed: int = 0
    epoch_weights: dict[int, float] = field(default_factory=dict)
    op_weights: dict[str, float] = field(default_factory=dict)
    min_scores: dict[str, float] = field(default_factory=dict)
    eval_fraction: float = 0.0


@dataclass
class Mix:
    train: list[Example]
    eval: list[Example]
    stats: dict[str, Any]


def parse_weights(text: str | None, option: str, key_type: type = str) -> dict[Any, float]:
    """'0=1,1=2' -> {0: 1.0, 1: 2.0}; a one-line error naming the option otherwise."""
    return parse_pairs(text, option, key_type)


def _weight(example: Example, spec: MixSpec) -> float:
    weight = 1.0
    if spec.epoch_weights and example.epoch is not None:
        weight *= spec.epoch_weights.get(example.epoch, 1.0)
    if spec.op_weights:
        weight *= spec.op_weights.get(example.op, 1.0)
    return weight


def build_mix(examples: Iterable[Example], spec: MixSpec) -> Mix:
    rows = list(examples)
    dropped: Counter = Counter()
    kept: list[Example] = []
    for example in rows:
        reason = _score_rejection(example, spec.min_scores)
        if reason:
            dropped[reason] += 1
        elif _weight(example, spec) <= 0:
            dropped["weight 0"] += 1
        else:
            kept.append(example)
    if spec.min_scores and not any(name in e.scores for e in rows for name in spec.min_scores):
        raise ValueError(
            f"--min-score: no row carries a score named {', '.join(spec.min_scores)}; run `evolinstruct score` first"
        )
    rng = np.random.default_rng(spec.seed)
    if spec.sample is not None and spec.sample < len(kept):
        weights = np.array([_weight(e, spec) for e in kept])
        picks = rng.choice(len(kept), size=spec.sample, replace=False, p=weights / weights.sum())
        dropped["not sampled"] += len(kept) - spec.sample
        kept = [kept[i] for i in sorted(picks)]  # file order: the mix reads like its source
    if not kept:
        raise ValueError("the data mix is empty: every row was filtered out")
    train, held_out = _split(kept, spec.eval_fraction, rng)
    stats = mix_stats(rows, train, held_out, dict(dropped), spec)
    return Mix(train, held_out, stats)


def _score_rejection(example: Example, min_scores: dict[str, float]) -> str | None:
    for name, floor in min_scores.items():
        if name not in example.scores:
            return f"no {name} score"
        if example.scores[name] < floor:
            return f"{name} < {floor:g}"
    return None


def _split(examples: list[Example], fraction: float, rng: np.random.Generator) -> tuple[list[Example], list[Example]]:
    if fraction <= 0:
        return examples, []
    by_root: dict[str, list[int]] = defaultdict(list)
    for i, example in enumerate(examples):
        by_root[example.root_id].append(i)
    roots = sorted(by_root)
    if len(roots) < 2:
        raise ValueError("--eval-fraction needs examples from at least 2 seeds (lineages are held out whole)")
    target = max(1, round(fraction * len(examples)))
    held: set[int] = set()
    for r in rng.permutation(len(roots)):
        if len(held) >= target or len(held) + len(by_root[roots[r]]) >= len(examples):
            break
        held.update(by_root[roots[r]])
    return [e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held]


def _group_counts(rows: list[Example], train: list[Example], held: list[Example], key) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: {"available": 0, "train": 0, "eval": 0})
    for name, group in (("available", rows), ("train", train), ("eval", held)):
        for example in group:
            out[key(example)][name] += 1
    return dict(sorted(out.items()))


def _epoch_key(example: Example) -> str:
    return UNKNOWN if example.epoch is None else str(example.epoch)


def mix_stats(rows: list[Example], train: list[Example], held: list[Example], dropped: dict[str, int], spec: MixSpec) -> dict[str, Any]:
    used = train + held
    score_names = sorted({name for e in used for name in e.scores})
    scores: dict[str, Any] = {}
    for name in score_names:
        values = [e.scores[name] for e in used if name in e.scores]
        by_epoch: dict[str, list[float]] = defaultdict(list)
        for e in used:
            if name in e.scores:
                by_epoch[_epoch_key(e)].append(e.scores[name])
        scores[name] = {
            "n": len(values),
            "mean": round(float(np.mean(values)), 3),
            "min": min(values),
            "max": max(values),
            "mean_by_epoch": {k: round(float(np.mean(v)), 3) for k, v in sorted(by_epoch.items())},
        }
    return {
        "spec": {**asdict(spec), "epoch_weights": {str(k): v for k, v in spec.epoch_weights.items()}},
        "rows_read": len(rows),
        "dropped": dropped,
        "train": len(train),
        "eval": len(held),
        "by_epoch": _group_counts(rows, train, held, _epoch_key),
        "by_op": _group_counts(rows, train, held, lambda e: e.op),
        "scores": scores,
        "response_chars_mean": round(float(np.mean([len(e.response) for e in used])), 1),
    }


def save_mix(mix: Mix, out_dir: Path) -> None:
    """OUT_DIR/mix.jsonl (every example used, with its split) and OUT_DIR/mix_stats.json."""
    rows = [{**e.to_dict(), "split": "train"} for e in mix.train] + [{**e.to_dict(), "split": "eval"} for e in mix.eval]
    write_atomic_lines(out_dir / MIX_FILE, rows)
    write_json(out_dir / MIX_STATS, mix.stats)


def load_mix(out_dir: Path) -> Mix:
    """The mix a previous run saved, so a resumed run trains on exactly the same examples."""
    train: list[Example] = []
    held: list[Example] = []
    with open(out_dir / MIX_FILE, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                row = json.loads(line)
                (held if row.pop("split") == "eval" else train).append(Example.from_dict(row))
    stats = json.loads((out_dir / MIX_STATS).read_text(encoding="utf-8"))
    return Mix(train, held, stats)
