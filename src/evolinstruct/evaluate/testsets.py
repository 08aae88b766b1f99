"""Evaluation test sets: the Evol-Instruct test set, Vicuna's 80 questions, MT-Bench, or your own file.

The public files are not shipped with the package (their licenses differ); they are read from a data
directory: `--data-dir`, else $EVOLINSTRUCT_DATA, else `../shared/data` beside the checkout or the
working directory. Every problem is one line naming the file (and line): `TestsetError`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..datadir import DATA_ENV, resolve_data_dir

BUILTIN = {
    "wizardlm": "eval/wizardlm_testset_218.jsonl",
    "vicuna": "eval/vicuna80.jsonl",
    "mtbench": "eval/mtbench_80.jsonl",
}
MTBENCH_REFERENCE = "eval/mtbench_reference_gpt4.jsonl"

# Columns accepted in a user file, first match wins (the built-in sets use the first spellings).
QUESTION_KEYS = ("Instruction", "instruction", "text", "question", "prompt")
SKILL_KEYS = ("Skill", "skill", "category", "Category")
DIFFICULTY_KEYS = ("Difficulty", "difficulty")
ID_KEYS = ("idx", "question_id", "id")


class TestsetError(ValueError):
    """A test set or data file that cannot be read; the message is one line naming the file."""

    __test__ = False  # not a pytest test class despite the name


@dataclass(slots=True)
class EvalItem:
    id: str
    position: int  # 1-based position in the test set: the paper's odd/even alternation uses it
    turns: list[str]  # one question, or MT-Bench's two turns
    skill: str  # the WizardLM skill or the Vicuna/MT-Bench category
    difficulty: int | None = None
    reference_answers: list[str] = field(default_factory=list)  # MT-Bench's for math/reasoning/coding

    @property
    def question(self) -> str:
        return self.turns[0]


def data_file(relative: str, data_dir: str | Path | None) -> Path:
    root = resolve_data_dir(data_dir)
    if root is None:
        raise TestsetError(
            f"cannot find the shared data directory for {relative}: pass --data-dir DIR or set ${DATA_ENV} "
            "(it holds eval/ and prompts/ as in ../shared/data)"
        )
    path = root / relative
    if not path.is_file():
        raise TestsetError(f"{path}: not found (pass --data-dir DIR or set ${DATA_ENV} to the shared data directory)")
    return path


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """(line, object) pairs from a JSONL file or a JSON array file."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise TestsetError(f"{path}: not found") from None
    except UnicodeDecodeError as exc:
        raise TestsetError(f"{path}: not UTF-8 text ({exc.reason})") from None
    if text.lstrip().startswith("["):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise TestsetError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
        out = list(enumerate(data, start=1))
    else:
        out = []
        for lineno, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                out.append((lineno, json.loads(line)))
            except json.JSONDecodeError as exc:
                raise TestsetError(f"{path}:{lineno}: malformed JSON line: {exc.msg} (column {exc.colno})") from None
    for lineno, obj in out:
        if not isinstance(obj, dict):
            raise TestsetError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
    return out


def _first(obj: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((obj[k] for k in keys if obj.get(k) not in (None, "")), None)


def _item(path: Path, lineno: int, position: int, obj: dict[str, Any]) -> EvalItem:
    turns = obj.get("turns")
    if turns is None:
        question = _first(obj, QUESTION_KEYS)
        if not isinstance(question, str) or not question.strip():
            raise TestsetError(f"{path}:{lineno}: no question (expected one of {', '.join(QUESTION_KEYS)} or turns)")
        turns = [question]
    if not isinstance(turns, list) or not turns or not all(isinstance(t, str) and t.strip() for t in turns):
        raise TestsetError(f"{path}:{lineno}: 'turns' must be a list of non-empty strings")
    difficulty = _first(obj, DIFFICULTY_KEYS)
    if difficulty is not None:
        try:
            difficulty = int(difficulty)
        except (TypeError, ValueError):
            raise TestsetError(f"{path}:{lineno}: difficulty {difficulty!r} is not an integer") from None
    item_id = _first(obj, ID_KEYS)
    reference = obj.get("reference") or []
    return EvalItem(
        id=str(item_id if item_id is not None else position),
        position=position,
        turns=list(turns),
        skill=str(_first(obj, SKILL_KEYS) or "all"),
        difficulty=difficulty,
        reference_answers=[str(r) for r in reference] if isinstance(reference, list) else [str(reference)],
    )


def load_testset(name: str, data_dir: str | Path | None = None, limit: int | None = None) -> tuple[str, list[EvalItem]]:
    """(kind, items): kind is 'pairwise' (wizardlm, vicuna, a file) or 'mtbench' (single grading, two turns)."""
    if name in BUILTIN:
        path = data_file(BUILTIN[name], data_dir)
    else:
        path = Path(name)
        if not path.is_file():
            raise TestsetError(f"{name}: no such test set file (or choose {', '.join(BUILTIN)})")
    items: list[EvalItem] = []
    seen: set[str] = set()
    for position, (lineno, obj) in enumerate(read_records(path), start=1):
        item = _item(path, lineno, position, obj)
        if item.id in seen:
            raise TestsetError(f"{path}:{lineno}: duplicate id {item.id!r}")
        seen.add(item.id)
        items.append(item)
    if not items:
        raise TestsetError(f"{path}: no questions")
    kind = "mtbench" if name == "mtbench" else "pairwise"
    if kind == "mtbench":
        _attach_mtbench_references(items, data_dir)
    return kind, items[:limit] if limit else items


def _attach_mtbench_references(items: list[EvalItem], data_dir: str | Path | None) -> None:
    """FastChat's GPT-4 reference answers (q101-130) where the question file carries none."""
    try:
        path = data_file(MTBENCH_REFERENCE, data_dir)
    except TestsetError:
        return  # the questions' own `reference` fields still apply
    by_id = {}
    for lineno, obj in read_records(path):
        try:
            by_id[str(obj["question_id"])] = [str(t) for t in obj["choices"][0]["turns"]]
        except (KeyError, IndexError, TypeError):
            raise TestsetError(f"{path}:{lineno}: expected question_id and choices[0].turns") from None
    for item in items:
        if item.id in by_id:  # FastChat reads the reference answer file, not the question's field
            item.reference_answers = by_id[item.id]
