"""Every path in a RUN_DIR, the atomic writers everyone uses, and the one writer of stats.json.

RUN_DIR/
  run.sqlite            the run store (store.py): every call, record, score, the bound config
  run.lock              the pid of the process writing the run, locked while it runs
  dataset.jsonl         the training mix (kept records)       eliminated.jsonl   failed evolutions
  errors.jsonl          calls that failed after retries       stats.json         counts, by every command
  filtered/NAME/        `evolinstruct filter` subsets: dataset.jsonl, removed.jsonl, filter_stats.json
  report.html           `evolinstruct report`'s default output

Files are written to a temporary name beside the target and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

STORE_FILE = "run.sqlite"
LOCK_FILE = "run.lock"  # held by the one process that writes the run (store.py)
DATASET = "dataset.jsonl"
ELIMINATED = "eliminated.jsonl"
ERRORS = "errors.jsonl"
STATS = "stats.json"
REPORT = "report.html"
FILTERED = "filtered"
REMOVED = "removed.jsonl"
FILTER_STATS = "filter_stats.json"

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunDir:
    """A run directory's paths. It creates nothing: writers make what they write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def store(self) -> Path:
        return self.path / STORE_FILE

    @property
    def dataset(self) -> Path:
        return self.path / DATASET

    @property
    def eliminated(self) -> Path:
        return self.path / ELIMINATED

    @property
    def errors(self) -> Path:
        return self.path / ERRORS

    @property
    def stats(self) -> Path:
        return self.path / STATS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def filtered_root(self) -> Path:
        return self.path / FILTERED

    def filtered(self, name: str) -> Path:
        """A filter subset's directory; `name` must be a plain name (no path parts)."""
        if not _PLAIN_NAME.match(name or "") or name in (".", ".."):
            raise ValueError(f"--name '{name}': use a plain name (letters, digits, '.', '_', '-'), not a path")
        return self.path / FILTERED / name

    def read_stats(self) -> dict[str, Any]:
        path = self.stats
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def write_atomic_lines(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """JSON lines, one per row; returns how many."""
    path = Path(path)
    tmp = _tmp(path)
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_json(path: str | Path, data: Any) -> None:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_text(path: str | Path, text: str) -> None:
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def write_stats(run_dir: str | Path, stats: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The one writer of stats.json: a whole new stats dict (evolve), or a function that updates the
    current one (score and later commands add their sections next to evolve's numbers)."""
    rd = RunDir(run_dir)
    new = stats(rd.read_stats()) if callable(stats) else stats
    write_json(rd.stats, new)
    return new
