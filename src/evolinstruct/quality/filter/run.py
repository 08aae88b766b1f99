"""`evolinstruct filter`: the stage list, and the two passes that apply it to a dataset.

Pass 1 decides: the leading per-row stages stream over the source, then each later stage sees every
surviving row at once. It holds only a Row (id, prompts, scores) per survivor plus what the stages keep
(hashes, MinHash signatures, embeddings). Pass 2 copies each source row, unchanged, to dataset.jsonl
or, with its reason and evidence, to removed.jsonl. The source is never written.
"""

from __future__ import annotations

import copy
import json
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ...rundir import (
    DATASET,
    FILTER_STATS,
    REMOVED,
    RunDir,
    atomic_files,
    check_output_dir,
    make_output_dir,
    write_json,
)
from ...seeds import SeedColumns, SeedError, _fields, iter_raw
from ..selection import row_length
from .base import Filter, Removal, Row, RowFilter
from .config import FilterConfig
from .decontam import Decontam
from .embedding import Embedding
from .exact import Exact
from .min_score import MinScore
from .minhash import MinHash
from .scrub import Scrub
from .selection import Selection

# The stages, in the order they run. filter_stats.json, the summary table and the reasons follow it.
FILTERS: tuple[type[Filter], ...] = (Scrub, MinScore, Decontam, Exact, MinHash, Embedding, Selection)
STAGES = tuple(f.name for f in FILTERS)
REASON_STAGE = {reason: f.name for f in FILTERS for reason in f.reasons}


@dataclass
class FilterOutcome:
    out_dir: Path
    stats: dict[str, Any]


def _rows(path: Path, columns: SeedColumns) -> Iterator[tuple[int, str, Any, str, str, str]]:
    """(index, row id, raw item, instruction, input, output) for each source row.

    The id is the row's own "id", else 'file:line'; a repeated one (two ids alike, or a one-line JSON
    array) gets '#row number' appended, so every row has its own.
    """
    seen: set[str] = set()
    for index, (lineno, item) in enumerate(iter_raw(path)):
        if isinstance(item, dict) and columns.instruction not in item:
            instruction, input_text, output = "", "", ""  # counted as empty_instruction, like an empty cell
            if index == 0:
                _fields(path, lineno, item, columns)  # a missing column on the first row is a usage error
        else:
            instruction, input_text, output = _fields(path, lineno, item, columns)
        if isinstance(item, dict) and isinstance(item.get("id"), str | int) and item["id"] != "":
            row_id = str(item["id"])
        else:
            row_id = f"{path.name}:{lineno}"
        if row_id in seen:
            row_id = f"{row_id}#{index + 1}"
        seen.add(row_id)
        yield index, row_id, item, instruction, input_text, output


def filter_dataset(
    source: str | Path, out_dir: str | Path, config: FilterConfig | None = None, columns: SeedColumns | None = None
) -> FilterOutcome:
    """Filter `source` (a dataset or seed file) into out_dir/{dataset.jsonl, removed.jsonl, filter_stats.json}."""
    config = config or FilterConfig()
    config.check()
    columns = columns or SeedColumns()
    source, out_dir = Path(source), Path(out_dir)
    if (out_dir / DATASET).resolve() == source.resolve():
        raise ValueError(f"{source}: the output would overwrite the source; choose another -o directory")
    check_output_dir(out_dir)  # before the work, not after it
    started = time.perf_counter()
    seconds: Counter[str] = Counter()
    removed: dict[int, Removal] = {}

    stages = [cls(config) for cls in FILTERS if cls.runs(config)]
    streamed: list[RowFilter] = []  # the leading per-row stages
    for stage in stages:
        if not isinstance(stage, RowFilter):
            break
        streamed.append(stage)

    # Pass 1: the leading per-row stages, streaming; then the others, each over all survivors.
    survivors: list[Row] = []
    rows_in = 0
    for index, row_id, item, instruction, input_text, output in _rows(source, columns):
        rows_in += 1
        scores = item.get("scores") if isinstance(item, dict) and isinstance(item.get("scores"), dict) else None
        length = row_length(scores, instruction, input_text, output)
        row = Row(index, row_id, instruction, input_text, scores, length, output)
        for stage in streamed:
            t = time.perf_counter()
            removal = stage.check(row)
            seconds[stage.name] += time.perf_counter() - t
            if removal is not None:
                removed[row.index] = removal
                break
        else:
            row.output = ""  # no later stage reads it
            survivors.append(row)
    seconds["read"] = time.perf_counter() - started - sum(seconds.values())
    for stage in stages[len(streamed):]:
        t = time.perf_counter()
        gone = stage.run(survivors)
        removed.update(gone)
        survivors = [row for row in survivors if row.index not in gone]
        seconds[stage.name] += time.perf_counter() - t

    # Pass 2: copy rows to the new dataset or to removed.jsonl, in source order.
    make_output_dir(out_dir)
    t = time.perf_counter()
    n_kept = n_removed = 0
    # Both files appear together, by rename, once both are complete; on any error neither is left half-written.
    with atomic_files([out_dir / DATASET, out_dir / REMOVED]) as (kept_file, removed_file):
        for index, row_id, item, *_ in _rows(source, columns):
            line = item if isinstance(item, dict) else {columns.instruction: item}
            if index in removed:
                reason, evidence = removed[index]
                line = {**line, "id": row_id, "reason": reason, "evidence": evidence}  # the id evidence refers to
                removed_file.write(json.dumps(line, ensure_ascii=False) + "\n")
                n_removed += 1
            else:
                kept_file.write(json.dumps(line, ensure_ascii=False) + "\n")
                n_kept += 1
    seconds["write"] = time.perf_counter() - t

    by_reason = Counter(removal.reason for removal in removed.values())
    stats: dict[str, Any] = {
        "source": str(source),
        "output_dir": str(out_dir),
        "rows_in": rows_in,
        "rows_out": n_kept,
        "removed": n_removed,
        "removed_by_reason": {r: by_reason[r] for r in REASON_STAGE if by_reason[r]},
        "stages": _stage_counts(rows_in, by_reason),
        "settings": asdict(config),
    }
    running = {f.name: f for f in stages}
    for cls in FILTERS:
        stats |= running[cls.name].stats() if cls.name in running else copy.deepcopy(cls.off_stats)
    stats["seconds"] = {k: round(v, 3) for k, v in seconds.items()} | {"total": round(time.perf_counter() - started, 3)}
    write_json(out_dir / FILTER_STATS, stats)
    return FilterOutcome(out_dir, stats)


def _stage_counts(rows_in: int, by_reason: Counter[str]) -> list[dict[str, Any]]:
    """Rows in and removed at each stage, with the removals by reason."""
    stages = []
    remaining = rows_in
    for stage in STAGES:
        gone = {r: n for r, n in by_reason.items() if REASON_STAGE[r] == stage}
        stages.append({"stage": stage, "in": remaining, "removed": sum(gone.values()), "by_reason": gone})
        remaining -= sum(gone.values())
    return stages


def filter_source(
    source: str | Path, name: str = "default", out: str | Path | None = None,
    config: FilterConfig | None = None, columns: SeedColumns | None = None,
) -> FilterOutcome:
    """SOURCE is a RUN_DIR (its dataset.jsonl, into RUN_DIR/filtered/NAME) or a file (into `out`)."""
    source = Path(source)
    if source.is_dir():
        run_dir = RunDir(source)
        if not run_dir.dataset.exists():
            raise SeedError(f"{run_dir.dataset}:0: no dataset here; run `evolinstruct evolve ... -o {source}` first")
        return filter_dataset(run_dir.dataset, Path(out) if out else run_dir.filtered(name), config, columns)
    if out is None:
        raise ValueError(f"{source}: filtering a file needs -o OUT_DIR (a RUN_DIR writes to RUN_DIR/filtered/NAME)")
    return filter_dataset(source, out, config, columns)
