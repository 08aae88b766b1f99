"""Read seed instructions from Alpaca JSON, Self-Instruct JSONL, or any JSON/JSONL/CSV/Parquet file.

GSM8K (`question`, `answer`) and MATH (`problem`, `solution`) rows are recognised without --column.
Conversations (`SeedColumns.conversations`, the conversation task): ShareGPT rows (`conversations`, turns of
`from`/`value`), OpenAI rows (`messages`, turns of `role`/`content`) and MT-Bench rows (`turns`, the user's
turns as strings, no answers: their answers are "" and the conversation task generates them); a row with an
instruction column is a one-turn conversation.

Every problem is reported as one line naming the file and line: `SeedError("seeds.jsonl:12: ...")`.
Seeds are yielded lazily so a large file never has to sit in memory as records.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .records import Seed


class SeedError(ValueError):
    """A seed file that cannot be read; the message is one line: 'path:line: what is wrong'."""


@dataclass(slots=True)
class SeedColumns:
    instruction: str = "instruction"
    input: str | None = "input"
    output: str | None = "output"
    conversations: bool = False  # read conversation rows (the conversation task); otherwise they are refused


@dataclass(slots=True)
class SeedReadStats:
    read: int = 0
    skipped_empty: int = 0


CHUNK = 1 << 20  # seed files are read 1 MiB at a time: memory stays flat however large the file


def _decoded_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) for each line, decoded as UTF-8, one line in memory at a time."""
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise SeedError(f"{path}:{lineno}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at column {exc.start + 1})") from None
            yield lineno, text


def _iter_json_array(path: Path) -> Iterator[tuple[int, Any]]:
    """Yield (line, element) of a top-level JSON array, decoding it incrementally from a small buffer."""
    decoder = json.JSONDecoder()
    lines = _decoded_lines(path)
    buf, pos, base_line, eof = "", 0, 1, False  # base_line: the file line where buf starts

    def more() -> bool:
        nonlocal buf, eof
        if eof:
            return False
        got = []
        size = 0
        for _, text in lines:
            got.append(text)
            size += len(text)
            if size >= CHUNK:
                break
        else:
            eof = True
        buf += "".join(got)
        return bool(got)

    def skip(chars: str) -> None:
        nonlocal pos
        while True:
            while pos < len(buf) and buf[pos] in chars:
                pos += 1
            if pos < len(buf) or not more():
                return

    counted_to, counted = 0, 0  # newlines in buf[:counted_to]; positions only move forward

    def line_at(at: int) -> int:
        nonlocal counted_to, counted
        if at > counted_to:
            counted += buf.count("\n", counted_to, at)
            counted_to = at
        return base_line + counted

    skip(" \t\r\n")
    if not buf[pos:].startswith("["):
        raise SeedError(f"{path}:{line_at(pos)}: expected a JSON array of objects")
    pos += 1
    while True:
        skip(" \t\r\n,")
        if pos >= len(buf):
            raise SeedError(f"{path}:{line_at(pos)}: unterminated JSON array")
        if buf[pos] == "]":
            pos += 1
            skip(" \t\r\n")
            if pos < len(buf):  # more after the array: a second array, JSON lines, a stray character
                raise SeedError(f"{path}:{line_at(pos)}: unexpected text after the JSON array "
                                "(a .json seed file is one array, or one JSON object per line)")
            return
        while True:
            try:
                value, end = decoder.raw_decode(buf, pos)
                break
            except json.JSONDecodeError as exc:
                if not more():  # at the end of the file: a real error, not a cut element
                    raise SeedError(f"{path}:{line_at(exc.pos)}: malformed JSON: {exc.msg}") from None
        yield line_at(pos), value
        pos = end
        if pos > CHUNK:  # drop what is consumed, keeping line numbers right
            base_line = line_at(pos)
            buf, pos, counted_to, counted = buf[pos:], 0, 0, 0


def _iter_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    for lineno, text in _decoded_lines(path):
        if not text.strip():
            continue
        try:
            yield lineno, json.loads(text)
        except json.JSONDecodeError as exc:
            raise SeedError(f"{path}:{lineno}: malformed JSON line: {exc.msg} (column {exc.colno})") from None


def _iter_csv(path: Path) -> Iterator[tuple[int, Any]]:
    reader = csv.DictReader(text for _, text in _decoded_lines(path))
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


def _starts_with_bracket(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    return head.startswith(b"[")


def iter_json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    """(line, row) of a JSON array or of JSON lines, whichever the file holds, streamed."""
    yield from (_iter_json_array(path) if _starts_with_bracket(path) else _iter_jsonl(path))


def iter_raw(path: Path) -> Iterator[tuple[int, Any]]:
    if not path.exists():
        raise SeedError(f"{path}:0: no such file")
    if path.is_dir():
        raise SeedError(f"{path}:0: is a directory, expected a seed file")
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        yield from _iter_parquet(path)
    elif suffix == ".csv":
        yield from _iter_csv(path)
    elif suffix == ".jsonl":
        yield from _iter_jsonl(path)
    elif suffix == ".json":
        # A .json file is usually one array (Alpaca); some are really JSON lines.
        yield from iter_json_rows(path)
    else:
        raise SeedError(f"{path}:0: unknown seed format '{suffix}' (use .json, .jsonl, .csv or .parquet)")


_TYPE_NAMES = {bool: "a boolean", int: "a number", float: "a number", list: "a list", dict: "an object"}
CONVERSATION_COLUMNS = ("conversations", "messages")  # ShareGPT and OpenAI chat rows


def _is_conversation(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(
        isinstance(turn, dict) and ({"from", "value"} <= turn.keys() or {"role", "content"} <= turn.keys())
        for turn in value
    )


def _conversation_hint(item: dict[str, Any]) -> str:
    text_columns = [k for k, v in item.items() if isinstance(v, str)][:6]
    pick = f" (text columns here: {', '.join(text_columns)})" if text_columns else ""
    return ("conversation seeds are read by --task conversation; for this task pick a text column with --column"
            + pick)


def _text(path: Path, lineno: int, item: dict[str, Any], column: str, numbers: bool) -> str:
    """A text cell: a string, or nothing (None). A number is text only in input/output columns (`numbers`):
    an instruction must be text. Lists, objects and booleans are never turned into their Python repr."""
    value = item.get(column)
    if value is None or (isinstance(value, float) and math.isnan(value)):  # missing (NaN: a dataframe's empty cell)
        return ""
    if isinstance(value, str):
        return value
    if numbers and isinstance(value, int | float) and not isinstance(value, bool):
        return json.dumps(value)  # 3 -> "3", 2.5 -> "2.5", as the file wrote it
    if _is_conversation(value):
        raise SeedError(f"{path}:{lineno}: column '{column}' holds a conversation (a list of turns): "
                        + _conversation_hint(item))
    kind = _TYPE_NAMES.get(type(value), type(value).__name__)
    need = "text (a string)" if not numbers else "text or a number"
    raise SeedError(f"{path}:{lineno}: column '{column}' holds {kind}, expected {need}"
                    + ("; a seed instruction must be text" if not numbers else ""))


# Math seed files: GSM8K rows are {question, answer}, MATH rows {problem, solution}. When the instruction
# column is the default one and a row lacks it, the question (problem) is the instruction; when a row's
# instruction is such a column and it has no `output`, the answer (solution) is its output.
PROBLEM_COLUMNS = {"question": "answer", "problem": "solution"}


def _problem_columns(item: dict[str, Any], cols: SeedColumns) -> SeedColumns:
    instruction = cols.instruction
    if instruction == "instruction" and instruction not in item:
        instruction = next((q for q in PROBLEM_COLUMNS if q in item), instruction)
    output = cols.output
    if instruction in PROBLEM_COLUMNS and output == "output" and output not in item:
        output = PROBLEM_COLUMNS[instruction]
    if (instruction, output) == (cols.instruction, cols.output):
        return cols
    return SeedColumns(instruction, cols.input, output)


# A conversation's speakers, as ShareGPT files name them, in chat-message roles.
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
         "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


def _turn_list(path: Path, lineno: int, item: dict[str, Any]) -> list[dict[str, str]] | None:
    """A conversation row's turns as chat messages, checked; None when the row holds no conversation."""
    where = f"{path}:{lineno}"
    if isinstance(item.get("turns"), list):  # MT-Bench: the user's turns, no answers
        turns = item["turns"]
        if not turns or not all(isinstance(t, str) for t in turns):
            raise SeedError(f"{where}: 'turns' must be a non-empty list of strings (the user's turns)")
        out: list[dict[str, str]] = []
        for text in turns:
            out += [{"role": "user", "content": text}, {"role": "assistant", "content": ""}]
        return out[:-1]
    for column, role_key, text_key in (("conversations", "from", "value"), ("messages", "role", "content")):
        turns = item.get(column)
        if turns is None:
            continue
        if not isinstance(turns, list) or not turns:
            raise SeedError(f"{where}: '{column}' must be a non-empty list of turns")
        out = []
        for n, turn in enumerate(turns, start=1):
            if not isinstance(turn, dict) or not isinstance(turn.get(text_key), str):
                raise SeedError(f"{where}: turn {n} of '{column}' needs '{role_key}' and a text '{text_key}'")
            role = ROLES.get(str(turn.get(role_key, "")).lower())
            if role is None:
                raise SeedError(f"{where}: turn {n} of '{column}' has an unknown speaker {turn.get(role_key)!r} "
                                f"(known: {', '.join(ROLES)})")
            if role == "system" and out:
                raise SeedError(f"{where}: turn {n} of '{column}' is a system message after the first turn")
            previous = out[-1]["role"] if out else None
            if role != "system" and previous == role:
                raise SeedError(f"{where}: turns {n - 1} and {n} of '{column}' are both {role} turns (a conversation "
                                "alternates user and assistant)")
            if role == "assistant" and previous in (None, "system"):
                raise SeedError(f"{where}: turn {n} of '{column}' is an assistant turn before any user turn")
            out.append({"role": role, "content": turn[text_key]})
        return out
    return None


def _conversation(path: Path, lineno: int, item: Any, cols: SeedColumns) -> tuple[list[dict[str, str]], str, str, str]:
    """(history, last user turn, its input, its answer): a conversation row split at its last user turn, or a
    plain row as a one-turn conversation."""
    turns = _turn_list(path, lineno, item) if isinstance(item, dict) else None
    if turns is None:
        return [], *_fields(path, lineno, item, cols)
    last = max((i for i, t in enumerate(turns) if t["role"] == "user"), default=None)
    if last is None:
        raise SeedError(f"{path}:{lineno}: the conversation has no user turn")
    answer = turns[last + 1]["content"] if last + 1 < len(turns) else ""
    return turns[:last], turns[last]["content"], "", answer


def _fields(path: Path, lineno: int, item: Any, cols: SeedColumns) -> tuple[str, str, str]:
    if isinstance(item, str):
        return item, "", ""
    if not isinstance(item, dict):
        kind = _TYPE_NAMES.get(type(item), type(item).__name__)
        raise SeedError(f"{path}:{lineno}: expected an object (or a string), got {kind}")
    cols = _problem_columns(item, cols)
    if cols.instruction not in item:
        keys = ", ".join(sorted(item)[:8])
        if any(_is_conversation(item.get(c)) for c in CONVERSATION_COLUMNS):
            raise SeedError(f"{path}:{lineno}: missing column '{cols.instruction}' (has: {keys}); this looks like a "
                            "chat file: " + _conversation_hint(item))
        raise SeedError(f"{path}:{lineno}: missing column '{cols.instruction}' (has: {keys}); choose one with --column")
    instruction = _text(path, lineno, item, cols.instruction, numbers=False)
    input_text = _text(path, lineno, item, cols.input, numbers=True) if cols.input else ""
    output = _text(path, lineno, item, cols.output, numbers=True) if cols.output else ""
    instances = item.get("instances")
    if isinstance(instances, list) and instances and isinstance(instances[0], dict):
        # Self-Instruct seed_tasks.jsonl: the first instance supplies input and output.
        input_text = input_text or _text(path, lineno, instances[0], "input", numbers=True)
        output = output or _text(path, lineno, instances[0], "output", numbers=True)
    return instruction, input_text, output


def read_seeds(
    path: str | Path,
    columns: SeedColumns | None = None,
    limit: int | None = None,
    stats: SeedReadStats | None = None,
) -> Iterator[Seed]:
    """Yield seeds in file order. Empty instructions are skipped and counted in `stats`. A file with no seed
    at all (empty, or every instruction empty) is an error: a run of nothing is never what was meant."""
    path = Path(path)
    cols = columns or SeedColumns()
    stats = stats if stats is not None else SeedReadStats()
    index = rows = last_line = 0
    for lineno, item in iter_raw(path):
        if limit is not None and index >= limit:
            return
        rows, last_line = rows + 1, lineno
        history: list[dict[str, str]] = []
        if cols.conversations:
            history, instruction, input_text, output = _conversation(path, lineno, item, cols)
        else:
            instruction, input_text, output = _fields(path, lineno, item, cols)
        if not instruction.strip():
            stats.skipped_empty += 1
            continue
        stats.read += 1
        yield Seed(index=index, instruction=instruction, input=input_text, output=output, source=f"{path.name}:{lineno}",
                   history=history)
        index += 1
    if index == 0:
        if rows == 0:
            raise SeedError(f"{path}:1: no seeds: the file holds no rows")
        raise SeedError(f"{path}:{last_line}: no usable seed: all {rows} rows have an empty '{cols.instruction}'; "
                        "choose the instruction column with --column")
