"""What the report reads from a RUN_DIR, read-only: the run store, stats.json, filter outputs and eval results.

Optional parts (scores, filters, evaluations) come back empty when absent, so the report can show
a hint instead of a chart.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..redact import redact as redact_text
from ..rundir import FILTER_STATS, REMOVED, RunDir
from ..store import RunStore, StoreError

EXAMPLES_PER_REASON = 3


class ReportError(ValueError):
    """Bad or missing input, with a one-line message naming the file."""


def redact(value: Any) -> Any:
    """Every string in `value` (nested dicts and lists too) with key-shaped text masked: error texts can quote
    request headers or URLs, and nothing that looks like a key may reach the page (the one masker, redact.py)."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass
class FilterSummary:
    """One `filter` subset as the report shows it (read from its filter_stats.json and removed.jsonl)."""

    name: str
    count_in: int | None
    count_out: int | None
    reasons: dict[str, int]
    examples: dict[str, list[dict[str, Any]]]
    stages: list[dict[str, Any]] = field(default_factory=list)  # the filter's pipeline: stage, in, removed


@dataclass
class RunData:
    run_dir: Path
    records: list[dict[str, Any]]
    stats: dict[str, Any]
    calls: dict[str, dict[str, int]]  # purpose -> calls, prompt_tokens, completion_tokens
    scores: dict[str, dict[str, float | None]] = field(default_factory=dict)  # record id -> scorer -> value
    filters: list[FilterSummary] = field(default_factory=list)
    evals: list[tuple[Path, dict[str, Any]]] = field(default_factory=list)

    @property
    def scorers(self) -> list[str]:
        return sorted({name for by_scorer in self.scores.values() for name in by_scorer})


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    except OSError as exc:
        raise ReportError(f"{path}: cannot read: {exc.strerror}") from None


def load_run(run_dir: str | Path, eval_dirs: list[Path] | None = None) -> RunData:
    run_dir = Path(run_dir)
    try:
        store = RunStore(run_dir, readonly=True)  # the report never writes a run
    except StoreError as exc:
        raise ReportError(str(exc)) from None
    try:
        records = list(store.iter_record_dicts())
        calls = store.call_totals()
        scores = store.scores()
    finally:
        store.close()
    stats_path = RunDir(run_dir).stats
    stats = read_json(stats_path) if stats_path.is_file() else {}
    evals = []
    for eval_dir in eval_dirs or []:
        results = Path(eval_dir) / "results.json"
        if not results.is_file():
            raise ReportError(f"{results}: no evaluation results here")
        evals.append((Path(eval_dir), read_json(results)))
    return RunData(run_dir=run_dir, records=records, stats=stats, calls=calls, scores=scores,
                   filters=_load_filters(run_dir), evals=evals)


def _load_filters(run_dir: Path) -> list[FilterSummary]:
    root = RunDir(run_dir).filtered_root
    if not root.is_dir():
        return []
    results = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        stats_path, removed_path = folder / FILTER_STATS, folder / REMOVED
        if not stats_path.is_file() and not removed_path.is_file():
            continue
        stats = read_json(stats_path) if stats_path.is_file() else {}
        reasons: dict[str, int] = {}
        examples: dict[str, list[dict[str, Any]]] = {}
        if removed_path.is_file():
            with open(removed_path, encoding="utf-8") as f:
                for line_no, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise ReportError(f"{removed_path}:{line_no}: malformed JSON line: {exc.msg}") from None
                    reason = str(row.get("reason") or "unspecified")
                    reasons[reason] = reasons.get(reason, 0) + 1
                    if len(examples.setdefault(reason, [])) < EXAMPLES_PER_REASON:
                        examples[reason].append(redact(row))
        else:  # no removed rows written: fall back to the counts in the stats
            reasons = {str(k): int(v) for k, v in (stats.get("removed_by_reason") or {}).items()}
        results.append(FilterSummary(
            name=folder.name,
            count_in=stats.get("rows_in"),
            count_out=stats.get("rows_out"),
            reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            examples=examples,
            stages=[st for st in stats.get("stages") or [] if isinstance(st, dict) and "stage" in st],
        ))
    return results
