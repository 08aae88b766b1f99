"""MinHash near-duplicates: word-shingle Jaccard with a row kept before, instruction and input alike."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..dedup import MinHashDeduper
from .base import Removal, Row, RowFilter

if TYPE_CHECKING:
    from .config import FilterConfig


class MinHash(RowFilter):
    name = "minhash"
    reasons = ("near_duplicate_minhash",)

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        self.deduper = MinHashDeduper(config.minhash_threshold, config.shingle_size, config.num_perm)

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.minhash

    def check(self, row: Row) -> Removal | None:
        evidence = self.deduper.check(row.id, row.instruction, row.input)
        return Removal("near_duplicate_minhash", evidence) if evidence else None
