"""What an evolve run leaves in RUN_DIR besides the store: dataset.jsonl, eliminated.jsonl, errors.jsonl
and stats.json, all computed from the store in one streaming pass (so they are right however many
times the run was interrupted). `score` rewrites the same files when it adds scores.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from ..records import Record
from ..rundir import DATASET, ELIMINATED, ERRORS, atomic_files
from ..store import RunStore


def write_outputs(store: RunStore, records: Iterable[Record] | None = None) -> dict[str, int]:
    """dataset.jsonl, eliminated.jsonl and errors.jsonl, in one pass over the records (all of them by default)."""
    run_dir = store.run_dir
    names = {"kept": DATASET, "eliminated": ELIMINATED, "error": ERRORS}
    counts = dict.fromkeys(names.values(), 0)
    scores = store.scores()  # from `evolinstruct score`; rows carry them whenever there are any
    statuses = list(names)
    # Written under temporary names and renamed together at the end; on any error (a full disk) every
    # temporary file is removed and the previous outputs stay as they were.
    with atomic_files(run_dir / names[status] for status in statuses) as handles:
        files = dict(zip(statuses, handles, strict=True))
        for record in store.iter_records() if records is None else records:
            row = record.dataset_row()
            if record.id in scores:
                row["scores"] = scores[record.id]
            files[record.status].write(json.dumps(row, ensure_ascii=False) + "\n")
            counts[names[record.status]] += 1
    return counts


class Tally:
    """Counts records as they stream past, for stats.json."""

    def __init__(self) -> None:
        self.seeds = self.seeds_answered = self.seed_errors = self.errors = 0
        self.truncated_kept = 0  # kept rows whose answer was cut off at max_tokens (marked "truncated")
        self.seeds_eliminated: Counter = Counter()  # seeds whose answer was dropped (--drop-truncated)
        self.first_error: str | None = None  # one failed call's error, for the console's summary
        self.kept: Counter = Counter()
        self.eliminated: Counter = Counter()
        self.by_epoch: dict[int, Counter] = defaultdict(Counter)
        self.by_op: dict[str, Counter] = defaultdict(Counter)

    def tap(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.add(record)
            yield record

    def add(self, record: Record) -> None:
        if record.status == "kept" and record.meta.get("truncated"):
            self.truncated_kept += 1
        elif record.status == "error" and self.first_error is None:
            self.first_error = str(record.evidence.get("error") or "")[:300]
        if record.epoch == 0:
            self.seeds += 1
            if record.status == "kept":
                self.seeds_answered += 1
            elif record.status == "eliminated":
                self.seeds_eliminated[record.reason] += 1
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
        # Only when there are any, so the stats of a run without truncation keep their shape.
        if self.truncated_kept:
            stats["truncated_answers_kept"] = self.truncated_kept
        if self.seeds_eliminated:
            stats["seeds_eliminated"] = dict(sorted(self.seeds_eliminated.items()))
        if self.first_error:
            stats["first_error"] = self.first_error
        stats.update(extra)
        return stats


def finalize(store: RunStore, epochs: int, extra: dict[str, Any], task_tally: Any = None) -> dict[str, Any]:
    """Write the output files and compute the stats in one streaming read of the store.

    Stats come from the store, so they are right however many times the run was interrupted. A task's own
    tally (tasks/: sandbox outcomes, answer agreement, ...) sees the same records and fills stats `task`.
    """
    tally = Tally()
    records = tally.tap(store.iter_records())
    if task_tally is not None:
        records = _also(records, task_tally.add)
    files = write_outputs(store, records)
    stats = tally.stats(store, epochs, {**extra, "files": files})
    if task_tally is not None:
        stats["task"] = task_tally.stats()
    if summary := store.score_summary():  # keep what `evolinstruct score` added when a run is resumed
        stats["scores"] = summary
    return stats


def _also(records: Iterable[Record], add: Callable[[Record], None]) -> Iterator[Record]:
    for record in records:
        add(record)
        yield record
