"""`evolinstruct export`: the training mix in the formats fine-tuning stacks read."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..records import join_input
from ..rundir import RunDir, check_output_file, make_output_dir, read_jsonl, write_atomic_lines

EXPORT_FORMATS = ("alpaca", "sharegpt", "openai")
log = logging.getLogger(__name__)


def _prompt(row: dict[str, Any]) -> str:
    return join_input(row.get("instruction", ""), row.get("input", "") or "", "\n\n")


SHAREGPT_FROM = {"user": "human", "assistant": "gpt", "system": "system"}


def _messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The row's conversation: earlier turns (a multi-turn record's history), then its last turn."""
    last = [{"role": "user", "content": _prompt(row)}, {"role": "assistant", "content": row["output"]}]
    return [*row.get("history", []), *last]


def convert(rows: Iterable[dict[str, Any]], fmt: str) -> Iterator[dict[str, Any]]:
    for row in rows:
        if fmt == "alpaca":
            out = {"instruction": row["instruction"], "input": row.get("input", ""), "output": row["output"]}
        elif fmt == "sharegpt":
            turns = [{"from": SHAREGPT_FROM.get(m["role"], m["role"]), "value": m["content"]} for m in _messages(row)]
            out = {"id": row.get("id"), "conversations": turns}
        elif fmt == "openai":
            out = {"messages": _messages(row)}
        else:
            raise ValueError(f"unknown export format '{fmt}' (choose {', '.join(EXPORT_FORMATS)})")
        if "scores" in row and fmt != "openai":  # the OpenAI fine-tuning schema takes messages only
            out["scores"] = row["scores"]
        yield out


def check_format(fmt: str) -> str:
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"unknown export format '{fmt}' (choose {', '.join(EXPORT_FORMATS)})")
    return fmt


def export(run_dir: str | Path, fmt: str, out: str | Path) -> int:
    """RUN_DIR's dataset.jsonl in `fmt`, written atomically to the regular file `out`. Everything is checked
    before anything is created: the format, the source, the target (a directory, a device or a pipe is
    refused, never replaced)."""
    check_format(fmt)
    run_dir = Path(run_dir)
    source = RunDir(run_dir).dataset
    if not source.exists():
        raise FileNotFoundError(f"{source}: no dataset here; run `evolinstruct evolve ... -o {run_dir}` first")
    out = check_output_file(out)

    make_output_dir(out.parent)
    multi_turn = 0

    def rows() -> Iterator[dict[str, Any]]:
        nonlocal multi_turn
        for row in read_jsonl(source):
            multi_turn += bool(row.get("history"))
            yield row

    n = write_atomic_lines(out, convert(rows(), fmt))
    if fmt == "alpaca" and multi_turn:  # Alpaca has no turns: say so rather than drop the context silently
        log.warning("%d of %d rows are conversations: -f alpaca keeps only their last turn; -f sharegpt or "
                    "-f openai keeps every turn", multi_turn, n)
    return n
