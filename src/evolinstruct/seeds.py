"""Read seed instructions from Alpaca JSON, Self-Instruct JSONL, or any JSON/JSONL/CSV/Parquet file.

Every problem is reported as one line naming the file and line: `SeedError("seeds.jsonl:12: ...")`.
Seeds are yielded lazily so a large file never has to sit in memory as records.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import Seed

REPO_INPUT_SEPARATOR = "\r\n"  # the WizardLM repo joins instruction and input with "\r\n"


class SeedError(ValueError):
    """A seed file that cannot be read; the message is one line: 'path:line: what is wrong'."""


@dataclass(slots=True)
class SeedColumns:
    instruction: str = "instruction"
    input: str | None = "input"
    output: str | None = "output"


@dataclass(slots=True)
class SeedReadStats:
    read: int = 0
    skipped_empty: int = 0


def _decode(path: Path, raw: bytes) -> str:
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise SeedError(f"{path}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})") from None


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _iter_json_array(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) of a top-level JSON array, so errors point at the element's line."""
    decoder = json.JSONDecoder()
    pos = len(text) - len(text.lstrip())
    if not text[pos:].startswith("["):
        raise SeedError(f"{path}:{_line_of(text, pos)}: expected a JSON array of objects")
    pos += 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text):
            raise SeedError(f"{path}:{_line_of(text, pos)}: unterminated JSON array")
        if text[pos] == "]":
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            raise SeedError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        yield _line_of(text, pos), value
        pos = end


def _iter_jsonl(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    for lineno, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            text = line.decode("utf-8-sig" if lineno == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            raise SeedError(f"{path}:{lineno}: not UTF-8 text (byte 0x{line[exc.start]:02x})") from None
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            raise SeedError(f"{path}:{lineno}: malformed JSON line: {exc.msg} (column {exc.colno})") from None


def _iter_csv(path: Path, raw: bytes) -> Iterator[tuple[int, Any]]:
    text = _decode(path, raw)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for row in reader:
        yield reader.line_num, row


def _iter_parquet(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a bad file
        raise SeedError(f"{path}:1: not a Parquet file ({exc})") from None
    row = 0
    for batch in table.iter_batches(batch_size=1024):
        for item in batch.to_pylist():
            row += 1
            yield row, item  # Parquet has no lines: the row number stands in for one


def iter_raw(path: Path) -> Iterator[tuple[int, Any]]:
    if not path.exists():
        raise SeedError(f"{path}:0: no such file")
    if path.is_dir():
        raise SeedError(f"{path}:0: is a directory, expected a seed file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
        return
    raw = path.read_bytes()
    if suffix == ".csv":
        yield from _iter_csv(path, raw)
    elif suffix == ".jsonl":
        yield from _iter_jsonl(path, raw)
    elif suffix == ".json":
        text = _decode(path, raw)
        if text.lstrip().startswith("["):
            yield from _iter_json_array(path, text)
        else:  # a .json file that is really JSON lines
            yield from _iter_jsonl(path, raw)
    else:
        raise SeedError(f"{path}:0: unknown seed format '{suffix}' (use .json, .jsonl, .csv or .parquet)")


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _fields(path: Path, lineno: int, item: Any, cols: SeedColumns) -> tuple[str, str, str]:
    if isinstance(item, str):
        return item, "", ""
    if not isinstance(item, dict):
        raise SeedError(f"{path}:{lineno}: expected an object, got {type(item).__name__}")
    if cols.instruction not in item:
        keys = ", ".join(sorted(item)[:8])
        raise SeedError(f"{path}:{lineno}: missing column '{cols.instruction}' (has: {keys}); choose one with --column")
    instruction = _text(item[cols.instruction])
    input_text = _text(item.get(cols.input)) if cols.input else ""
    output = _text(item.get(cols.output)) if cols.output else ""
    instances = item.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        # Self-Instruct seed_tasks.jsonl: the first instance supplies input and output.
        input_text = input_text or _text(instances[0].get("input"))
        output = output or _text(instances[0].get("output"))
    return instruction, input_text, output


def read_seeds(
    path: str | Path,
    columns: SeedColumns | None = None,
    limit: int | None = None,
    stats: SeedReadStats | None = None,
) -> Iterator[Seed]:
    """Yield seeds in file order. Empty instructions are skipped and counted in `stats`."""
    path = Path(path)
    cols = columns or SeedColumns()
    stats = stats if stats is not None else SeedReadStats()
    index = 0
    for lineno, item in iter_raw(path):
        if limit is not None and index >= limit:
            return
        instruction, input_text, output = _fields(path, lineno, item, cols)
        if not instruction.strip():
            stats.skipped_empty += 1
            continue
        stats.read += 1
        yield Seed(index=index, instruction=instruction, input=input_text, output=output, source=f"{path.name}:{lineno}")
        index += 1


def join_input(instruction: str, input_text: str, separator: str = REPO_INPUT_SEPARATOR) -> str:
    """The prompt text of a seed: instruction, then its input, as the WizardLM repo joins them."""
    return f"{instruction}{separator}{input_text}" if input_text.strip() else instruction
