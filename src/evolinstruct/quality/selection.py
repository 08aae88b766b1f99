"""DEITA-like selection: rank rows by a score, then take them greedily while they stay diverse.

Scores come from a row's `"scores"` dict (written by `evolinstruct score`). `complexity*quality` is
DEITA's evol score. Rows without the requested score rank after every scored row; when no row has
it at all, ranking falls back to the first score of RANK_FALLBACK that some row has, ending with
length (longer first), which needs no scorer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RANK_KEYS = ("difficulty", "complexity", "quality", "complexity*quality", "length")
RANK_FALLBACK = ("complexity*quality", "quality", "complexity", "difficulty", "length")


def row_length(scores: dict[str, Any] | None, *texts: str) -> float:
    """`length_tokens` when scored, else a word count of the texts (close enough to rank by)."""
    if scores and isinstance(scores.get("length_tokens"), int | float):
        return float(scores["length_tokens"])
    return float(sum(len(t.split()) for t in texts))


def score_of(scores: dict[str, Any] | None, key: str, length: float) -> float | None:
    if key == "length":
        return length
    if not scores:
        return None
    if key == "complexity*quality":
        c, q = scores.get("complexity"), scores.get("quality")
        return float(c) * float(q) if isinstance(c, int | float) and isinstance(q, int | float) else None
    value = scores.get(key)
    return float(value) if isinstance(value, int | float) else None


def resolve_rank_key(requested: str, available: Iterable[str]) -> tuple[str, str | None]:
    """The key to rank by and, when it is not the requested one, why."""
    present = set(available) | {"length"}
    if requested in present:
        return requested, None
    for key in RANK_FALLBACK:  # model scores first, length last
        if key in present:
            return key, f"no row has a '{requested}' score (run `evolinstruct score`); ranked by {key}"
    return "length", None  # unreachable: length is always present


def available_keys(scores: dict[str, Any] | None) -> set[str]:
    return {k for k in RANK_KEYS if score_of(scores, k, 0.0) is not None}
