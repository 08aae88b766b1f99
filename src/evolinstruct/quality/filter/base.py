"""What every filter stage shares: the row it sees, the removal it returns, and the Filter interface.

A stage either checks one row at a time (RowFilter.check: scrub, min score, decontamination, exact and
MinHash duplicates, which stream over the source) or needs all surviving rows at once (Filter.run:
embedding near-duplicates, selection to a budget). Both answer `run(rows) -> {row index: Removal}`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import numpy as np

if TYPE_CHECKING:
    from .config import FilterConfig


class Removal(NamedTuple):
    """Why a row was removed: a reason its stage declares, and the evidence (written to removed.jsonl)."""

    reason: str
    evidence: dict[str, Any]


@dataclass(slots=True)
class Row:
    """What the filters see of a source row: the first pass holds these, never whole rows."""

    index: int  # row position in the source
    id: str
    instruction: str
    input: str
    scores: dict[str, Any] | None
    length: float
    output: str = ""  # seen by the streamed per-row stages; cleared once a row has passed them
    vector: np.ndarray | None = None  # unit embedding, set by the embedding stage on the rows it keeps

    @property
    def prompt(self) -> str:
        return f"{self.instruction}\n{self.input}" if self.input.strip() else self.instruction


class Filter:
    """One stage. `name` is its stage in filter_stats.json; `reasons`, every reason it can give."""

    name: ClassVar[str]
    reasons: ClassVar[tuple[str, ...]]
    off_stats: ClassVar[dict[str, Any]] = {}  # its own filter_stats.json entries when it does not run

    def __init__(self, config: FilterConfig) -> None:
        self.config = config

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        """Whether the stage is switched on (the summary lists a stage that is off only if it removed rows)."""
        raise NotImplementedError

    @classmethod
    def runs(cls, config: FilterConfig) -> bool:
        """Whether the stage runs: when it is on, unless part of it always applies."""
        return cls.enabled(config)

    def run(self, rows: list[Row]) -> dict[int, Removal]:
        """The rows to remove, by row index, in the order they were decided."""
        raise NotImplementedError

    def stats(self) -> dict[str, Any]:
        """Entries this stage adds to filter_stats.json (`off_stats` holds them when it does not run)."""
        return {}


class RowFilter(Filter):
    """A stage that decides each row on its own (and on the rows it kept before it, for duplicates)."""

    def check(self, row: Row) -> Removal | None:
        raise NotImplementedError

    def run(self, rows: list[Row]) -> dict[int, Removal]:
        return {row.index: removal for row in rows if (removal := self.check(row)) is not None}
