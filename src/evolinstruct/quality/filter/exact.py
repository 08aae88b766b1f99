"""Exact duplicates: the same normalised instruction and input as a row kept before (first one wins)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dedup import ExactDeduper
from .base import Removal, Row, RowFilter

if TYPE_CHECKING:
    from .config import FilterConfig


class Exact(RowFilter):
    name = "exact"
    reasons = ("exact_duplicate",)

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        self.deduper = ExactDeduper()

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.exact

    def check(self, row: Row) -> Removal | None:
        evidence = self.deduper.check(row.id, row.instruction, row.input)
        return Removal("exact_duplicate", evidence) if evidence else None
