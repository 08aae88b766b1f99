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


def write_outputs(store: RunStore) -> dict[str, int]:
    run_dir = store.run_dir
    return {
        DATASET: write_atomic_lines(run_dir / DATASET, (r.dataset_row() for r in store.iter_records("kept"))),
        ELIMINATED: write_atomic_lines(run_dir / ELIMINATED, (r.dataset_row() for r in store.iter_records("eliminated"))),
        ERRORS: write_atomic_lines(run_dir / ERRORS, (r.dataset_row() for r in store.iter_records("error"))),
    }


def compute_stats(store: RunStore, epochs: int, extra: dict[str, Any]) -> dict[str, Any]:
    """Stats from the store, so they are right however many times the run was interrupted."""
    seeds = seeds_answered = seed_errors = 0
    kept = Counter()
    eliminated: Counter = Counter()
    errors = 0
    by_epoch: dict[int, Counter] = defaultdict(Counter)
    by_op: dict[str, Counter] = defaultdict(Counter)
    for record in store.iter_records():
        if record.epoch == 0:
            seeds += 1
            if record.status == "kept":
                seeds_answered += 1
            else:
                seed_errors += 1
            continue
        by_epoch[record.epoch]["attempted"] += 1
        by_op[record.op]["attempted"] += 1
        by_epoch[record.epoch][record.status] += 1
        by_op[record.op][record.status] += 1
        if record.status == "kept":
            kept[record.epoch] += 1
        elif record.status == "eliminated":
            eliminated[record.reason] += 1
            by_op[record.op][f"eliminated:{record.reason}"] += 1
        else:
            errors += 1
    attempted = sum(c["attempted"] for c in by_epoch.values())
    totals = store.call_totals()
    n_kept = sum(kept.values())
    stats = {
        "seeds": seeds,
        "seeds_answered": seeds_answered,
        "seed_errors": seed_errors,
        "kept": n_kept,
        "dataset_rows": seeds_answered + n_kept,
        "eliminated": dict(sorted(eliminated.items())),
        "evolutions": {
            "planned": seeds * epochs,
            "attempted": attempted,
            "kept": n_kept,
            "eliminated": sum(eliminated.values()),
            "errors": errors,
            "not_attempted": seeds * epochs - attempted,
        },
        "by_epoch": {str(e): dict(c) for e, c in sorted(by_epoch.items())},
        "by_op": {op: dict(c) for op, c in sorted(by_op.items())},
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


def load_jsonl(path: Path) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
