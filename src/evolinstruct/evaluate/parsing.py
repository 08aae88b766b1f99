"""Parse judge verdicts. Anything that does not parse returns None: it is counted, never fatal.

Pairwise (FastChat reviewer prompts): the first line should be "score1 score2". Judges also write
"8, 7", "8/10 and 7/10", "Assistant 1: 8\\nAssistant 2: 7", or (the math prompt) a Python tuple
"(8, 7)" after their working. Single grading (MT-Bench): "[[rating]]" as FastChat parses it.
"""

from __future__ import annotations

import re

MAX_SCORE = 10.0
_NUMBER = r"(\d+(?:\.\d+)?)"
_OUT_OF_TEN = re.compile(r"\s*(?:/\s*10(?:\.0)?|out\s+of\s+10)\b", re.IGNORECASE)
_ASSISTANT = [
    re.compile(rf"assistant\s*{label}\b[^\d\n]{{0,40}}?{_NUMBER}", re.IGNORECASE) for label in ("(?:1|a)", "(?:2|b)")
]
_TUPLE = re.compile(rf"\(\s*{_NUMBER}\s*,\s*{_NUMBER}\s*\)")
_RATING = [re.compile(rf"\[\[{_NUMBER}\]\]"), re.compile(rf"\[{_NUMBER}\]"), re.compile(rf"rating\s*:\s*{_NUMBER}", re.IGNORECASE)]


def _in_range(*scores: float) -> bool:
    return all(0.0 <= s <= MAX_SCORE for s in scores)


def parse_pair_scores(text: str) -> tuple[float, float] | None:
    """(score of assistant 1, score of assistant 2) on 0-10, or None when the verdict has no such pair."""
    if not text or not text.strip():
        return None
    lines = [line.strip().strip("*#`").strip() for line in text.strip().splitlines() if line.strip()]
    first = _OUT_OF_TEN.sub("", lines[0]) if lines else ""
    # "Assistant 1: 8 ... Assistant 2: 7" anywhere: the labels' digits must not be read as scores.
    labelled = [pattern.search(_OUT_OF_TEN.sub("", text)) for pattern in _ASSISTANT]
    if all(labelled):
        scores = (float(labelled[0].group(1)), float(labelled[1].group(1)))
        if _in_range(*scores):
            return scores
    numbers = [float(n) for n in re.findall(_NUMBER, first)]
    if len(numbers) == 2 and _in_range(*numbers):
        return numbers[0], numbers[1]
    tuples = _TUPLE.findall(text)
    if tuples:
        scores = (float(tuples[-1][0]), float(tuples[-1][1]))  # the final tuple is the verdict
        if _in_range(*scores):
            return scores
    return None


# The heads a guided judge must open with (see evaluate/runner.py and backends/guide.py).
PAIR_HEAD = r"(10|[1-9]) (10|[1-9])\n"
RATING_HEAD = r"Rating: \[\[(10|[1-9])\]\]\n"


def parse_head_scores(text: str) -> tuple[float, float] | None:
    """The scores a guided verdict opens with (PAIR_HEAD), or None (a verdict cut off before its head ended)."""
    found = re.match(PAIR_HEAD, text or "")
    return (float(found.group(1)), float(found.group(2))) if found else None


def parse_rating(text: str) -> float | None:
    """MT-Bench's "[[rating]]" (FastChat falls back to "[rating]"; we also accept "Rating: 7"), or None."""
    for pattern in _RATING:
        found = pattern.search(text or "")  # the first match, as FastChat does
        if found:
            rating = float(found.group(1))
            return rating if _in_range(rating) else None
    return None
