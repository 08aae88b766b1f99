"""What a run leaves in RUN_DIR besides the store: dataset.jsonl, eliminated.jsonl, stats.json, and exports.

Files are written to a temporary name and renamed, so a reader never sees half a file.
"""

from __future__ import annotations

import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .quality.summary import score_summary
from .records import Record
from .seeds import join_input
from .store import RunStore

DATASET = "dataset.jsonl"
ELIMINATED = "eliminated.jsonl"
ERRORS = "errors.jsonl"
STATS = "stats.json"
EXPORT_FORMATS = ("alpaca", "sharegpt", "openai")


def write_atomic_lines(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    tmp = path.with_name(path.name + ".tmp")
    n = 0
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    os.replace(tmp, path)
    return n


def write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def write_outputs(store: RunStore, records: Iterable[Record] | None = None) -> dict[str, int]:
    """dataset.jsonl, eliminated.jsonl and errors.jsonl, in one pass over the records (all of them by default)."""
    run_dir = store.run_dir
    names = {"kept": DATASET, "eliminated": ELIMINATED, "error": ERRORS}
    counts = dict.fromkeys(names.values(), 0)
    scores = store.scores()  # from `evolinstruct score`; rows carry them whenever there are any
    files = {status: open(run_dir / (name + ".tmp"), "w", encoding="utf-8") for status, name in names.items()}
    try:
        for record in store.iter_records() if records is None else records:
            row = record.dataset_row()
            if record.id in scores:
                row["scores"] = scores[record.id]
            files[record.status].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[names[record.status]] += 1
    finally:
        for f in files.values():
            f.close()
    for name in names.values():
        os.replace(run_dir / (name + ".tmp"), run_dir / name)
    return counts


class Tally:
    """Counts records as they stream past, for stats.json."""

    def __init__(self) -> None:
        self.seeds = self.seeds_answered = self.seed_errors = self.errors = 0
        self.kept: Counter = Counter()
        self.eliminated: Counter = Counter()
        self.by_epoch: dict[int, Counter] = defaultdict(Counter)
        self.by_op: dict[str, Counter] = defaultdict(Counter)

    def tap(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.add(record)
            yield record

    def add(self, record: Record) -> None:
        if record.epoch == 0:
            self.seeds += 1
            if record.status == "kept":
                self.seeds_answered += 1
            else:
                self.seed_errors += 1
            return
        for counter in (self.by_epoch[record.epoch], self.by_op[record.op]):
            counter["attempted"] += 1
            counter[record.status] += 1
        if record.status == "kept":
            self.kept[record.epoch] += 1
        elif record.status == "eliminated":
            self.eliminated[record.reason] += 1
            self.by_op[record.op][f"eliminated:{record.reason}"] += 1
        else:
            self.errors += 1

    def stats(self, store: RunStore, epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
        attempted = sum(c["attempted"] for c in self.by_epoch.values())
        totals = store.call_totals()
        n_kept = sum(self.kept.values())
        stats = {
            "seeds": self.seeds,
            "seeds_answered": self.seeds_answered,
            "seed_errors": self.seed_errors,
            "kept": n_kept,
            "dataset_rows": self.seeds_answered + n_kept,
            "eliminated": dict(sorted(self.eliminated.items())),
            "evolutions": {
                "planned": self.seeds * epochs,
                "attempted": attempted,
                "kept": n_kept,
                "eliminated": sum(self.eliminated.values()),
                "errors": self.errors,
                "not_attempted": self.seeds * epochs - attempted,
            },
            "by_epoch": {str(e): dict(c) for e, c in sorted(self.by_epoch.items())},
            "by_op": {op: dict(c) for op, c in sorted(self.by_op.items())},
            "tokens": {
                "prompt": sum(t["prompt_tokens"] for t in totals.values()),
                "completion": sum(t["completion_tokens"] for t in totals.values()),
                "by_purpose": totals,
            },
            "stored_calls": sum(t["calls"] for t in totals.values()),
            "pending_failures": len(store.failures()),
        }
        stats.update(extra)
        return stats


def finalize(store: RunStore, epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Write the output files and compute the stats in one streaming read of the store.

    Stats come from the store, so they are right however many times the run was interrupted.
    """
    tally = Tally()
    files = write_outputs(store, tally.tap(store.iter_records()))
    stats = tally.stats(store, epochs, {**extra, "files": files})
    if summary := score_summary(store):  # keep what `evolinstruct score` added when a run is resumed
        stats["scores"] = summary
    return stats


def _prompt(row: dict[str, Any]) -> str:
    return join_input(row.get("instruction", ""), row.get("input", "") or "", "\n\n")


def convert(rows: Iterable[dict[str, Any]], fmt: str) -> Iterator[dict[str, Any]]:
    for row in rows:
        if fmt == "alpaca":
            out = {"instruction": row["instruction"], "input": row.get("input", ""), "output": row["output"]}
        elif fmt == "sharegpt":
            out = {
                "id": row.get("id"),
                "conversations": [{"from": "human", "value": _prompt(row)}, {"from": "gpt", "value": row["output"]}],
            }
        elif fmt == "openai":
            out = {"messages": [{"role": "user", "content": _prompt(row)}, {"role": "assistant", "content": row["output"]}]}
        else:
            raise ValueError(f"unknown export format '{fmt}' (choose {', '.join(EXPORT_FORMATS)})")
        if "scores" in row and fmt != "openai":  # the OpenAI fine-tuning schema takes messages only
            out["scores"] = row["scores"]
        yield out


def export(run_dir: str | Path, fmt: str, out: str | Path) -> int:
    run_dir = Path(run_dir)
    source = run_dir / DATASET
    if not source.exists():
        raise FileNotFoundError(f"{source}: no dataset here; run `evolinstruct evolve ... -o {run_dir}` first")

    def rows() -> Iterator[dict[str, Any]]:
        with open(source, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    yield json.loads(line)

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic_lines(out, convert(rows(), fmt))
