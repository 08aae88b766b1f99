"""Selection to a budget (DEITA-like): rank by a score, then keep rows greedily while they stay diverse."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ..dedup import greedy_diverse
from ..selection import available_keys, resolve_rank_key, score_of
from .base import Filter, Removal, Row
from .embedding import embed_rows

if TYPE_CHECKING:
    from .config import FilterConfig


class Selection(Filter):
    name = "selection"
    reasons = ("selection_too_similar", "selection_over_budget")
    off_stats = {"rank_by_used": None}

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        self.rank_key, self.rank_note = config.rank_by, None

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.budget is not None

    def run(self, rows: list[Row]) -> dict[int, Removal]:
        budget = self.config.budget
        assert budget is not None
        score_keys: set[str] = set().union(*(available_keys(r.scores) for r in rows))
        self.rank_key, self.rank_note = resolve_rank_key(self.config.rank_by, score_keys)
        ranks = [score_of(r.scores, self.rank_key, r.length) for r in rows]
        order = sorted(
            range(len(rows)), key=lambda p: (ranks[p] is None, -(ranks[p] or 0.0), -rows[p].length, rows[p].index)
        )
        ranked = [rows[p] for p in order]

        def vectors_for(a: int, b: int) -> np.ndarray:
            block = ranked[a:b]
            if block[0].vector is not None:  # embedded by the embedding stage
                return np.stack([r.vector for r in block])
            return embed_rows(block)

        if self.config.diversity_threshold >= 1.0:  # no diversity check: plain top-N, no embeddings needed
            too_similar: dict[int, dict[str, Any]] = {}
            over = list(range(budget, len(ranked)))
        else:
            _, too_similar, over, _ = greedy_diverse(
                [r.id for r in ranked], vectors_for, self.config.diversity_threshold,
                limit=budget, block_rows=self.config.block_rows,
            )
        removed = {
            ranked[pos].index: Removal("selection_too_similar", {**evidence, "rank": pos + 1})
            for pos, evidence in too_similar.items()
        }
        for pos in over:
            removed[ranked[pos].index] = Removal(
                "selection_over_budget",
                {"rank": pos + 1, "rank_by": self.rank_key, "score": ranks[order[pos]], "budget": budget},
            )
        return removed

    def stats(self) -> dict[str, Any]:
        return {"rank_by_used": self.rank_key} | ({"rank_note": self.rank_note} if self.rank_note else {})
