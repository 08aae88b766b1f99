"""The settings of `evolinstruct filter`: every stage reads its own from here."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..selection import RANK_KEYS


@dataclass
class FilterConfig:
    scrub: bool = True
    min_scores: dict[str, float] = field(default_factory=dict)
    decontam: bool = True
    eval_sets: list[str] = field(default_factory=list)  # empty: every file of the default eval directory
    decontam_n: int = 5
    decontam_ratio: float = 0.7
    decontam_long_n: int = 13
    decontam_min_words: int = 5
    exact: bool = True
    minhash: bool = True
    minhash_threshold: float = 0.7
    shingle_size: int = 2
    num_perm: int = 128
    embed: bool = True
    embed_threshold: float = 0.95
    budget: int | None = None
    rank_by: str = "complexity*quality"
    diversity_threshold: float = 0.9
    block_rows: int = 1024

    def check(self) -> None:
        if self.rank_by not in RANK_KEYS:
            raise ValueError(f"--rank-by must be one of {', '.join(RANK_KEYS)}, not '{self.rank_by}'")
        for name in ("minhash_threshold", "embed_threshold", "decontam_ratio", "diversity_threshold"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"--{name.replace('_', '-')} must be in (0, 1], not {getattr(self, name)}")
        if self.budget is not None and self.budget < 0:
            raise ValueError("--budget must be 0 or more")
