"""Reading scores out of LLM answers, leniently: models wrap a number in prose, Markdown and scales.

A parse returns the value or None with the reason; the caller stores the raw answer either way, and
a None is counted as a parse failure, never raised.
"""

from __future__ import annotations

import re

NUMBER_WORDS = {
    "one": "1", "two": "2", "three": "3", "four": "4", "five": "5",
    "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
NUMBER_WORD_RE = re.compile(r"\b(" + "|".join(NUMBER_WORDS) + r")\b", re.IGNORECASE)
NUM = r"(?<![\w.])(\d+(?:\.\d+)?)"
# "on a scale of 1 to 10", "(1-10)", "from 1 to 10": the scale's own numbers are not the score.
SCALE_RE = re.compile(
    r"(?:on\s+)?(?:a\s+)?scale\s+(?:of|from)\s+\d+\s*(?:to|-|\u2013)\s*\d+|\b(?:from\s+)?1\s*(?:to|-|\u2013)\s*10\b",
    re.IGNORECASE,
)
OUT_OF_TEN_RE = re.compile(NUM + r"\s*(?:/|out\s+of)\s*10\b", re.IGNORECASE)
KEYWORD_RE = re.compile(
    r"\b(?:score|rating|rated?|give\s+(?:it|this)|difficulty)\b[^\d\n]{0,24}?" + NUM, re.IGNORECASE
)
FIRST_NUMBER_RE = re.compile(NUM)
LIST_MARKER_RE = re.compile(r"^\s*\d+[.)](?=\s)", re.MULTILINE)


def _clean(text: str) -> str:
    text = re.sub(r"^#+\s*\d+[.)]\s", " ", text, flags=re.MULTILINE)  # a numbered heading, "### 1. Solar"
    text = re.sub(r"[*_`#]+", " ", text)  # Markdown emphasis and headings around the number
    return NUMBER_WORD_RE.sub(lambda m: NUMBER_WORDS[m.group(1).lower()], text)


def parse_difficulty(text: str, low: float = 1, high: float = 10) -> tuple[float | None, str | None]:
    """A 1-10 rating from answers like "7", "Score: 7/10", "I'd rate this 8 out of 10", "**6**".

    Order: an explicit "N/10" or "N out of 10"; a number after a word like "score" or "rate"; the
    first number once scale phrases ("on a scale of 1 to 10") and the markers of an enumerated
    list ("1. ...", "2. ...") are removed. Out of range fails.
    """
    cleaned = _clean(text or "")
    if not cleaned.strip():
        return None, "empty answer"
    match = OUT_OF_TEN_RE.search(cleaned)
    if match is None:
        unscaled = SCALE_RE.sub(" ", cleaned)
        if len(LIST_MARKER_RE.findall(unscaled)) >= 2:  # an enumerated list (the model answered instead)
            unscaled = LIST_MARKER_RE.sub(" ", unscaled)
        match = KEYWORD_RE.search(unscaled) or FIRST_NUMBER_RE.search(unscaled)
    if match is None:
        return None, "no number in the answer"
    value = float(match.group(1))
    if not low <= value <= high:
        return None, f"{match.group(1)} is outside {low:g}-{high:g}"
    return value, None


# DEITA's answer format is "[1] Score: 3" per line (the prompt asks for exactly that).
RANK_LINE_RE = re.compile(r"\[\s*(\d+)\s*\][^\S\n]*(?:score)\s*[:=]?\s*" + NUM, re.IGNORECASE)
# Looser per-line forms: "1. 3", "[2] 4", "(3) Score 2", "Question 4: 5".
LOOSE_LINE_RE = re.compile(
    r"^\s*(?:question|item|response|instruction)?\s*[\[(]?(\d+)[\]).:]?\s*[:\-]?\s*(?:score\s*[:=]?\s*)?"
    r"(\d+(?:\.\d+)?)\s*$",
    re.IGNORECASE | re.MULTILINE,
)
BARE_SCORE_RE = re.compile(r"\bscore\s*[:=]?\s*" + NUM, re.IGNORECASE)


def parse_ranking(text: str, n: int) -> tuple[dict[int, float], dict[int, str]]:
    """Per-item scores (1-based position -> score in 1..n+1) from a DEITA ranking answer, and the
    reason for each position that got none. The first score given for a position wins."""
    cleaned = re.sub(r"[*_`#]+", "", text or "")
    found: dict[int, float] = {}
    bad: dict[int, str] = {}

    def take(pairs: list[tuple[str, str]]) -> None:
        for index_text, score_text in pairs:
            index, score = int(index_text), float(score_text)
            if not 1 <= index <= n or index in found:
                continue
            if 1 <= score <= n + 1:
                found[index] = score
                bad.pop(index, None)
            else:
                bad.setdefault(index, f"score {score_text} is outside 1-{n + 1}")

    take(RANK_LINE_RE.findall(cleaned))
    if not found:
        take(LOOSE_LINE_RE.findall(cleaned))
    if not found:
        bare = BARE_SCORE_RE.findall(cleaned)
        if len(bare) == n:  # "Score: 2 ... Score: 1" in order, without positions
            take([(str(i + 1), s) for i, s in enumerate(bare)])
    for index in range(1, n + 1):
        if index not in found:
            bad.setdefault(index, "no score for this position" if cleaned.strip() else "empty answer")
    return found, bad


# ------------------------------------------------------------------------------------------ guided heads
# With `--guide` on (the default for an in-process model, see run.py) the answer must open with one of
# these heads, which the backend enforces while decoding (models/guide.py); the model still picks the
# numbers. The heads end with a newline: the embedded tokenizer writes "10" as "1" + "0", and a head
# that could end after "1" (such as `(10|[1-9])\b`, satisfied at the end of the text) would stop
# guiding before 10 could be chosen, and let "15" through. A guided answer is read from its head only.
SCORE_LINE = r"(10|[1-9])\n"
DIFFICULTY_HEAD = SCORE_LINE  # the paper's prompt ends "## Score:" and asks for the score alone


def _choices(high: int) -> str:
    return "(" + "|".join(str(k) for k in range(high, 0, -1)) + ")"


def _rank_line(index: int, n: int) -> str:
    return rf"\[{index}\] Score: {_choices(n + 1)}\n"


def ranking_head(n: int) -> str:
    """DEITA's answer format for n items, "[1] Score: s\\n[2] Score: s\\n..." with each s in 1..n+1."""
    return "".join(_rank_line(i, n) for i in range(1, n + 1))


def parse_difficulty_head(text: str) -> tuple[float | None, str | None]:
    """The score a guided difficulty answer opens with (DIFFICULTY_HEAD), or None with the reason."""
    found = re.match(DIFFICULTY_HEAD, text or "")
    if found is None:
        return None, "empty answer" if not (text or "").strip() else "no score head (the answer was cut off)"
    return float(found.group(1)), None


def parse_ranking_head(text: str, n: int) -> tuple[dict[int, float], dict[int, str]]:
    """Per-item scores from a guided ranking answer (ranking_head(n)), read line by line from the start;
    the positions after the last complete line (an answer cut off by its token limit) get the reason."""
    found: dict[int, float] = {}
    position = 0
    for index in range(1, n + 1):
        line = re.compile(_rank_line(index, n)).match(text or "", position)
        if line is None:
            break
        found[index] = float(line.group(1))
        position = line.end()
    reason = "no score for this position (the answer was cut off)" if (text or "").strip() else "empty answer"
    return found, {index: reason for index in range(1, n + 1) if index not in found}
