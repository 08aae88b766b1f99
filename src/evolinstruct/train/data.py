"""Read training examples from a RUN_DIR or from any file `evolinstruct export` writes.

Every row becomes one `Example`: the prompt text (instruction and input joined as `export` joins them),
the response, and what the mix needs to weigh and report it (epoch, operation, scores, lineage root).
Rows from an export lose lineage the alpaca/sharegpt/openai formats do not carry; they count as
epoch/op "unknown". Bad input is one line naming the file and line.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..records import join_input
from ..rundir import DATASET
from ..seeds import SeedError, iter_json_rows

UNKNOWN = "unknown"


class TrainDataError(ValueError):
    """Training data that cannot be read; the message is one line: 'path:line: what is wrong'."""


@dataclass(slots=True)
class Example:
    id: str
    prompt: str
    response: str
    epoch: int | None = None
    op: str = UNKNOWN
    root_id: str = ""
    scores: dict[str, float] = field(default_factory=dict)
    # A conversation's earlier turns (chat messages): every assistant turn in them trains too (formats.py).
    history: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Example:
        return cls(**{k: data[k] for k in cls.__slots__ if k in data})  # type: ignore[attr-defined]


def resolve_data_file(data: Path, subset: str | None = None) -> Path:
    """The JSONL file behind DATA: a RUN_DIR's dataset.jsonl (or a filtered subset's), or the file itself."""
    if data.is_dir():
        if subset:
            for candidate in (data / "filtered" / subset / DATASET, data / "filtered" / f"{subset}.jsonl"):
                if candidate.exists():
                    return candidate
            available = sorted(p.name for p in (data / "filtered").glob("*")) if (data / "filtered").is_dir() else []
            raise TrainDataError(
                f"{data}: no filtered subset '{subset}' (found: {', '.join(available) or 'none'}); run `evolinstruct filter` first"
            )
        path = data / DATASET
        if not path.exists():
            raise TrainDataError(f"{path}: no dataset here; run `evolinstruct evolve ... -o {data}` first")
        return path
    if subset:
        raise TrainDataError(f"{data}: --subset needs a RUN_DIR, not a file")
    if not data.exists():
        raise TrainDataError(f"{data}: no such file or directory")
    return data


def read_examples(path: Path) -> Iterator[Example]:
    """Examples from a JSONL file (dataset.jsonl or an alpaca/sharegpt/openai export) or a JSON array."""
    for lineno, row in _rows(path):
        try:
            example = _example(row, lineno)
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainDataError(f"{path}:{lineno}: {exc}") from None
        if example is not None:
            yield example


def _rows(path: Path) -> Iterator[tuple[int, Any]]:
    # The seed readers' streaming JSON-array-or-lines reader, with its 'path:line: ...' errors.
    try:
        yield from iter_json_rows(path)
    except SeedError as exc:
        raise TrainDataError(str(exc)) from None


def _example(row: Any, lineno: int) -> Example | None:
    if not isinstance(row, dict):
        raise ValueError(f"expected a JSON object, got {type(row).__name__}")
    if row.get("status") not in (None, "kept"):
        return None  # an eliminated or failed record never trains
    history: list[dict[str, str]] = []
    if "conversations" in row:  # sharegpt
        history, prompt, response = _turns(row["conversations"], "from", "value", ("human", "user"), ("gpt", "assistant"))
    elif "messages" in row:  # openai
        history, prompt, response = _turns(row["messages"], "role", "content", ("user",), ("assistant",))
    elif "instruction" in row:  # dataset.jsonl or alpaca
        if "output" not in row:
            raise ValueError("row has an instruction but no 'output'")
        prompt = join_input(str(row["instruction"]), str(row.get("input") or ""), "\n\n")
        response = str(row["output"])
        history = _history(row.get("history") or [])
    else:
        raise ValueError("unknown row format: expected instruction/output (alpaca, dataset.jsonl), conversations (sharegpt) or messages (openai)")
    if not prompt.strip() or not response.strip():
        return None  # nothing to learn from; counted as dropped by the mix
    ident = str(row.get("id") or f"line-{lineno}")
    epoch = row.get("epoch")
    scores = row.get("scores") or {}
    if not isinstance(scores, dict):
        raise ValueError("'scores' must be an object of name -> number")
    return Example(
        id=ident,
        prompt=prompt,
        response=response,
        epoch=int(epoch) if epoch is not None else None,
        op=str(row.get("op") or UNKNOWN),
        root_id=str(row.get("root_id") or ident),
        scores={k: float(v) for k, v in scores.items() if isinstance(v, int | float) and not isinstance(v, bool)},
        history=history,
    )


def _history(turns: Any) -> list[dict[str, str]]:
    """A dataset row's `history`: chat messages with a role and text content."""
    if not isinstance(turns, list) or not all(
            isinstance(t, dict) and t.get("role") in ("system", "user", "assistant") and isinstance(t.get("content"), str)
            for t in turns):
        raise ValueError("'history' must be a list of {role: system|user|assistant, content: text}")
    return [{"role": t["role"], "content": t["content"]} for t in turns]


def _turns(turns: Any, role_key: str, text_key: str, user: tuple[str, ...],
           assistant: tuple[str, ...]) -> tuple[list[dict[str, str]], str, str]:
    """(history, prompt, response): the last user turn answered by an assistant turn, and the turns before it
    as chat messages. A one-turn conversation's system message goes before its prompt (no history)."""
    if not isinstance(turns, list):
        raise ValueError("conversation must be a list of turns")
    messages: list[dict[str, str]] = []
    for turn in turns:
        if not isinstance(turn, dict):
            raise ValueError("conversation turns must be objects")
        role = turn.get(role_key)
        name = "user" if role in user else "assistant" if role in assistant else "system" if role == "system" else None
        if name is not None:
            messages.append({"role": name, "content": str(turn.get(text_key, ""))})
    last = max((i for i in range(len(messages) - 1)
                if messages[i]["role"] == "user" and messages[i + 1]["role"] == "assistant"), default=None)
    if last is None:
        raise ValueError("conversation has no user turn followed by an assistant turn")
    history, prompt, response = messages[:last], messages[last]["content"], messages[last + 1]["content"]
    if not any(m["role"] == "user" for m in history):  # one turn: as single-turn data always was
        system = "\n\n".join(m["content"] for m in history if m["role"] == "system")
        return [], (f"{system}\n\n{prompt}" if system else prompt), response
    return history, prompt, response
