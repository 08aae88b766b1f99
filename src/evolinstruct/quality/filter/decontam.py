"""Decontamination: drop prompts that overlap an eval prompt (the rule: quality/decontam.py)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..decontam import NAMED_EVAL_SETS, Decontaminator, EvalPrompt, default_eval_dir, read_eval_set
from .base import Removal, Row, RowFilter

if TYPE_CHECKING:
    from .config import FilterConfig


def load_eval_prompts(config: FilterConfig) -> tuple[list[EvalPrompt], list[dict[str, Any]]]:
    """Eval prompts to decontaminate against, and a note per file for filter_stats.json."""
    prompts: list[EvalPrompt] = []
    notes: list[dict[str, Any]] = []
    if config.eval_sets:
        for name in config.eval_sets:
            if str(name).lower() in NAMED_EVAL_SETS:  # a set a package ships (humaneval), not a file
                got = NAMED_EVAL_SETS[str(name).lower()]()
                notes.append({"file": str(name).lower(), "items": len({(p.file.split(":")[0], p.id) for p in got}),
                              "prompts": len(got)})
            else:
                got = read_eval_set(Path(name), strict=True)
                notes.append({"file": str(name), "items": len(got)})
            prompts += got
        return prompts, notes
    eval_dir = default_eval_dir()
    if eval_dir is None:
        notes.append({"file": None, "items": 0, "note": "no default eval directory found; pass --eval-set FILE"})
        return prompts, notes
    for path in sorted(p for p in eval_dir.iterdir() if p.suffix.lower() in (".jsonl", ".json")):
        got = read_eval_set(path, strict=False)
        prompts += got
        note: dict[str, Any] = {"file": str(path), "items": len(got)}
        if not got:
            note["note"] = "no prompt field (e.g. reference answers): skipped"
        notes.append(note)
    return prompts, notes


class Decontam(RowFilter):
    name = "decontam"
    reasons = ("eval_contamination",)
    off_stats = {"eval_sets": [], "eval_items_too_short": 0}

    def __init__(self, config: FilterConfig) -> None:
        super().__init__(config)
        prompts, self.notes = load_eval_prompts(config)
        self.decontaminator = Decontaminator(
            prompts, n=config.decontam_n, min_ratio=config.decontam_ratio,
            long_n=config.decontam_long_n, min_words=config.decontam_min_words,
        )

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.decontam

    def check(self, row: Row) -> Removal | None:
        evidence = self.decontaminator.check(row.prompt)
        return Removal("eval_contamination", evidence) if evidence else None

    def stats(self) -> dict[str, Any]:
        return {"eval_sets": self.notes, "eval_items_too_short": self.decontaminator.skipped_short}
