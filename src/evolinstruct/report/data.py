"""What the report reads from a RUN_DIR, read-only: the run store, stats.json, filter outputs and eval results.

Optional parts (scores, filters, evaluations) come back empty when absent, so the report can show
a hint instead of a chart.
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STORE_FILE = "run.sqlite"  # the same name as store.STORE_FILE; not imported so the report never opens a writer
FILTERED_DIR = "filtered"
EXAMPLES_PER_REASON = 3

# Error texts can quote request headers or URLs: mask anything that looks like a key before it reaches the page.
_SECRET = re.compile(r"(sk-[A-Za-z0-9_\-]{8,}|Bearer\s+\S+|api[_-]?key=\S+)", re.IGNORECASE)


class ReportError(ValueError):
    """Bad or missing input, with a one-line message naming the file."""


def redact(value: Any) -> Any:
    if isinstance(value, str):
        return _SECRET.sub("[redacted]", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


@dataclass
class FilterResult:
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
    filters: list[FilterResult] = field(default_factory=list)
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


def _connect_readonly(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        db.execute("SELECT 1 FROM records LIMIT 1")
    except sqlite3.DatabaseError as exc:
        raise ReportError(f"{path}: not a readable run store ({exc})") from None
    return db


def load_run(run_dir: str | Path, eval_dirs: list[Path] | None = None) -> RunData:
    run_dir = Path(run_dir)
    store = run_dir / STORE_FILE
    if not store.is_file():
        raise ReportError(f"{store}: no run store here; run `evolinstruct evolve SEEDS -o {run_dir}` first")
    db = _connect_readonly(store)
    try:
        records = [json.loads(data) for (data,) in db.execute("SELECT data FROM records ORDER BY seed_index, epoch, id")]
        calls = {
            purpose: {"calls": n, "prompt_tokens": p or 0, "completion_tokens": c or 0}
            for purpose, n, p, c in db.execute(
                "SELECT purpose, COUNT(*), SUM(prompt_tokens), SUM(completion_tokens) FROM calls GROUP BY purpose"
            )
        }
        scores = _load_scores(db)
    finally:
        db.close()
    stats_path = run_dir / "stats.json"
    stats = read_json(stats_path) if stats_path.is_file() else {}
    evals = []
    for eval_dir in eval_dirs or []:
        results = Path(eval_dir) / "results.json"
        if not results.is_file():
            raise ReportError(f"{results}: no evaluation results here")
        evals.append((Path(eval_dir), read_json(results)))
    return RunData(run_dir=run_dir, records=records, stats=stats, calls=calls, scores=scores,
                   filters=_load_filters(run_dir), evals=evals)


def _load_scores(db: sqlite3.Connection) -> dict[str, dict[str, float | None]]:
    has_table = db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'scores'").fetchone()
    if not has_table:
        return {}
    scores: dict[str, dict[str, float | None]] = {}
    for record_id, scorer, value in db.execute("SELECT record_id, scorer, value FROM scores"):
        scores.setdefault(record_id, {})[scorer] = None if value is None else float(value)
    return scores


def _first_int(stats: dict[str, Any], keys: tuple[str, ...]) -> int | None:
    for key in keys:
        if isinstance(stats.get(key), int):
            return stats[key]
    return None


def _load_filters(run_dir: Path) -> list[FilterResult]:
    root = run_dir / FILTERED_DIR
    if not root.is_dir():
        return []
    results = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        stats_path, removed_path = folder / "filter_stats.json", folder / "removed.jsonl"
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
            for key in ("removed_by_reason", "by_reason", "reasons"):
                if isinstance(stats.get(key), dict):
                    reasons = {str(k): int(v) for k, v in stats[key].items() if isinstance(v, int | float)}
                    break
        results.append(FilterResult(
            name=folder.name,
            count_in=_first_int(stats, ("in", "rows_in", "n_in", "input")),
            count_out=_first_int(stats, ("out", "rows_out", "n_out", "kept", "output")),
            reasons=dict(sorted(reasons.items(), key=lambda kv: -kv[1])),
            examples=examples,
            stages=[st for st in stats.get("stages") or [] if isinstance(st, dict) and "stage" in st],
        ))
    return results
