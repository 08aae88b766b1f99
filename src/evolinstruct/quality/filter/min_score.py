"""Min score: keep rows whose every --min-score KEY reaches its value (a row without the score goes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..selection import score_of
from .base import Removal, Row, RowFilter

if TYPE_CHECKING:
    from .config import FilterConfig


class MinScore(RowFilter):
    name = "min_score"
    reasons = ("below_min_score", "missing_score")

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return bool(config.min_scores)

    def check(self, row: Row) -> Removal | None:
        for key, minimum in self.config.min_scores.items():
            value = score_of(row.scores, key, row.length)
            if value is None:
                return Removal("missing_score", {"score": key, "min": minimum})
            if value < minimum:
                return Removal("below_min_score", {"score": key, "value": value, "min": minimum})
        return None
