"""Cheap scores that need no LLM: length, constraints, steps, code, data, lexical diversity.

All of them look at the prompt (instruction + input), which is what evolution makes harder, except
lexical diversity, which reads the whole record (prompt + response) because MTLD needs running text.
They are deliberately simple pattern counts: fast on 250K records and easy to reason about, not parsers.
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ...records import Record, join_input

log = logging.getLogger(__name__)

HEURISTIC_SCORERS = ("length_tokens", "n_constraints", "n_steps", "has_code", "has_data", "lexical_diversity")

WORD_RE = re.compile(r"\w+(?:'\w+)?")


# ---------------------------------------------------------------------------------------------- length
class TokenCounter:
    """Counts tokens with the embedded model's tokenizer (the `tokenizers` library reading its
    tokenizer.json: ~0.2 s to load, no model). Falls back to a regex word count when the embedded
    model is not installed; `name` says which one counted."""

    def __init__(self) -> None:
        self._tokenizer = _embedded_tokenizer()
        self.name = "SmolLM2-135M-Instruct" if self._tokenizer is not None else "regex-words"

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenizer is None:
            return len(WORD_RE.findall(text))
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)


@lru_cache(maxsize=1)
def _embedded_tokenizer():  # -> tokenizers.Tokenizer | None
    try:
        from tokenizers import Tokenizer

        from ...models.embedded import embedded_checkpoint

        return Tokenizer.from_file(str(embedded_checkpoint() / "tokenizer.json"))
    except Exception as exc:  # no embedded model or no tokenizers: a word count still works
        log.warning("length_tokens falls back to a regex word count: %s", exc)
        return None


# ---------------------------------------------------------------------------------------------- constraints
# Phrases that add a requirement or limit (what add_constraints inserts). Longest first, so that
# "must not" counts once, not as "must" plus "not".
CONSTRAINT_PHRASES = (
    "no more than", "no fewer than", "no less than", "not exceed", "make sure", "at least", "at most",
    "fewer than", "less than", "more than", "must not", "should not", "do not", "don't", "need to",
    "needs to", "have to", "has to", "required to", "requirement", "constraint", "restriction",
    "must", "should", "ensure", "exactly", "only", "without", "avoid", "maximum", "minimum", "limit",
    "limited to", "within",
)
CONSTRAINT_RE = re.compile(
    r"\b(?:" + "|".join(re.escape(p) for p in sorted(CONSTRAINT_PHRASES, key=len, reverse=True)) + r")\b"
    # a numeric bound such as "in 50 words" or "3 bullet points"
    r"|\b\d+\s+(?:words?|sentences?|characters?|paragraphs?|lines?|items?|bullet points?|examples?)\b",
    re.IGNORECASE,
)


def count_constraints(text: str) -> int:
    return len(CONSTRAINT_RE.findall(text))


# ---------------------------------------------------------------------------------------------- steps
LIST_ITEM_RE = re.compile(r"^\s*(?:\d{1,2}[.)]\s|[-*\u2022]\s|step\s+\d+\b)", re.IGNORECASE | re.MULTILINE)
SEQUENCE_RE = re.compile(
    r"\b(?:first(?:ly)?|second(?:ly)?|third(?:ly)?|then|next|after that|afterwards|finally|lastly|"
    r"subsequently|followed by|step[- ]by[- ]step|multi[- ]?step|multiple steps)\b",
    re.IGNORECASE,
)


def count_steps(text: str) -> int:
    """Enumerated or bulleted lines plus sequencing words ("first", "then", "finally", "step by step")."""
    return len(LIST_ITEM_RE.findall(text)) + len(SEQUENCE_RE.findall(text))


# ---------------------------------------------------------------------------------------------- code and data
CODE_PATTERNS: dict[str, re.Pattern[str]] = {
    "fenced": re.compile(r"```"),
    "python": re.compile(r"^\s*(?:def\s+\w+\s*\(.*\)\s*(?:->.*)?:|class\s+\w+.*:|(?:from\s+[\w.]+\s+)?import\s+[\w.]+)\s*$", re.MULTILINE),
    "c_like": re.compile(r"#include\s*<|\bfunction\s+\w*\s*\(|=>\s*\{|\b(?:public|private|static)\s+\w+(?:\[\])?\s+\w+\s*\(|^\s*(?:for|while|if)\s*\(.*\)\s*\{", re.MULTILINE),
    "call": re.compile(r"\b(?:console\.log|System\.out\.print\w*|printf|print)\s*\("),
    "shell": re.compile(r"^#!/\S*sh\b|^\s*\$\s+[a-z]\w*\s|\b(?:sudo|grep|chmod|mkdir|ls -\w+)\s+\S", re.MULTILINE),
    "html": re.compile(r"<(?:html|head|body|div|span|script|style|ul|ol|li|h[1-6]|a\s+href|button|form|input)\b[^>]*>", re.IGNORECASE),
}
HTML_TAGS = {"html", "head", "body", "div", "span", "p", "a", "ul", "ol", "li", "table", "tr", "td", "th", "script",
             "style", "h1", "h2", "h3", "h4", "h5", "h6", "br", "img", "b", "i", "em", "strong", "button", "form", "code"}
XML_ELEMENT_RE = re.compile(r"<([A-Za-z_][\w:.-]*)(?:\s[^<>]*)?>[^<]*</\1\s*>")
SQL_RE = re.compile(r"\b(?:SELECT\s+[\w*,.\s()]+?\s+FROM\s+\w+|INSERT\s+INTO\s+\w+|CREATE\s+TABLE\s+\w+|UPDATE\s+\w+\s+SET\b|DELETE\s+FROM\s+\w+)")
SQL_LOWER_RE = re.compile(r"\b(?:create\s+table|insert\s+into)\s+\w+", re.IGNORECASE)
TABLE_ROW_RE = re.compile(r"^\s*\|?.*\|.*\|?\s*$")
TABLE_RULE_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)+\|?\s*$")


def code_kinds(text: str) -> list[str]:
    return [kind for kind, pattern in CODE_PATTERNS.items() if pattern.search(text)]


def _has_json(text: str) -> bool:
    """A JSON object with a key, or an array of 2+ items, embedded anywhere in the text."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"[\[{]", text):
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if (isinstance(value, dict) and value) or (isinstance(value, list) and len(value) >= 2):
            return True
    return False


def _has_table(lines: list[str]) -> bool:
    """A Markdown table: a header row, a |---| rule, and a body row."""
    for i in range(1, len(lines) - 1):
        if TABLE_RULE_RE.match(lines[i]) and TABLE_ROW_RE.match(lines[i - 1]) and TABLE_ROW_RE.match(lines[i + 1]):
            return True
    return False


def _has_delimited(lines: list[str], min_rows: int = 3) -> bool:
    """CSV/TSV: 3+ consecutive short lines with the same number (1+) of commas, or of tabs."""
    for sep in (",", "\t"):
        run, last = 0, -1
        for line in lines:
            n = line.count(sep) if line.strip() and len(line) < 300 else 0
            run = run + 1 if n and n == last else (1 if n else 0)
            last = n
            if run >= min_rows:
                return True
    return False


def data_kinds(text: str) -> list[str]:
    lines = text.splitlines()
    kinds = []
    if _has_json(text):
        kinds.append("json")
    if _has_table(lines) or re.search(r"<table\b", text, re.IGNORECASE):
        kinds.append("table")
    if _has_delimited(lines):
        kinds.append("csv")
    if "<?xml" in text or any(m.group(1).lower() not in HTML_TAGS for m in XML_ELEMENT_RE.finditer(text)):
        kinds.append("xml")
    if SQL_RE.search(text) or SQL_LOWER_RE.search(text):
        kinds.append("sql")
    return kinds


# ---------------------------------------------------------------------------------------------- lexical diversity
MTLD_THRESHOLD = 0.72


def _mtld_pass(words: list[str]) -> float:
    factors, types, count = 0.0, set(), 0
    ttr = 1.0
    for word in words:
        count += 1
        types.add(word)
        ttr = len(types) / count
        if ttr <= MTLD_THRESHOLD:
            factors += 1
            types, count, ttr = set(), 0, 1.0
    if count:
        factors += (1 - ttr) / (1 - MTLD_THRESHOLD)  # the partial last factor
    # A text whose TTR never fell to the threshold is at least as long as one factor: its length.
    return len(words) / factors if factors > 0 else float(len(words))


def mtld(text: str) -> float:
    """MTLD (McCarthy & Jarvis 2010): the mean length of word runs that keep their type-token ratio
    above 0.72, averaged over a forward and a backward pass. Unlike a plain type-token ratio it does
    not fall as texts get longer, so short seeds and long evolutions compare fairly."""
    words = [w.lower() for w in WORD_RE.findall(text)]
    if not words:
        return 0.0
    return (_mtld_pass(words) + _mtld_pass(words[::-1])) / 2


# ---------------------------------------------------------------------------------------------- all together
@dataclass(slots=True)
class HeuristicScore:
    scorer: str
    value: float
    detail: dict[str, Any]


def prompt_text(record: Record) -> str:
    return join_input(record.instruction, record.input, "\n")


def heuristic_scores(record: Record, tokens: TokenCounter) -> list[HeuristicScore]:
    prompt = prompt_text(record)
    code = code_kinds(prompt)
    data = data_kinds(prompt)
    return [
        HeuristicScore("length_tokens", float(tokens.count(prompt)),
                       {"tokenizer": tokens.name, "response_tokens": tokens.count(record.output)}),
        HeuristicScore("n_constraints", float(count_constraints(prompt)), {}),
        HeuristicScore("n_steps", float(count_steps(prompt)), {}),
        HeuristicScore("has_code", float(bool(code)), {"kinds": code}),
        HeuristicScore("has_data", float(bool(data)), {"kinds": data}),
        HeuristicScore("lexical_diversity", round(mtld(f"{prompt}\n{record.output}"), 3), {"measure": "MTLD"}),
    ]
