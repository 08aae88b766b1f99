"""Embedding near-duplicates: all-MiniLM-L6-v2 cosine with a row kept before, in file order, a block at a time."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..dedup import greedy_diverse
from .base import Filter, Removal, Row

if TYPE_CHECKING:
    from .config import FilterConfig


def embed_rows(rows: list[Row]) -> np.ndarray:
    """One unit vector per row: [instruction ; input] embeddings, halves scaled so the whole has norm 1.

    Without an input the cosine of two rows is that of their instructions; with inputs it is the mean of
    the instruction and input cosines, so one passage under two different tasks is not a duplicate.
    """
    from ..embeddings import embed_texts

    with_input = [i for i, r in enumerate(rows) if r.input.strip()]
    vectors = embed_texts([r.instruction for r in rows] + [rows[i].input for i in with_input])
    n, dim = len(rows), vectors.shape[1] if len(vectors) else 384
    out = np.zeros((n, 2 * dim), dtype=np.float32)
    out[:, :dim] = vectors[:n]
    if with_input:
        out[with_input, :dim] /= math.sqrt(2)
        out[with_input, dim:] = vectors[n:] / math.sqrt(2)
    return out


class Embedding(Filter):
    name = "embedding"
    reasons = ("near_duplicate_embedding",)

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.embed

    def run(self, rows: list[Row]) -> dict[int, Removal]:
        """Also leaves each kept row's embedding on it (row.vector), for selection."""
        if not rows:
            return {}
        kept, rejected, _, vectors = greedy_diverse(
            [r.id for r in rows],
            lambda a, b: embed_rows(rows[a:b]),
            self.config.embed_threshold,
            block_rows=self.config.block_rows,
        )
        for k, pos in enumerate(kept):
            rows[pos].vector = vectors[k]
        return {rows[pos].index: Removal("near_duplicate_embedding", evidence) for pos, evidence in rejected.items()}
