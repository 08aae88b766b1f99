"""Final answers of math solutions: find one in a response, normalise it, and take the majority of K.

`parse_final_answer(text)` returns the raw final answer of a response, or None:
- the last explicit marker wins, whichever its kind: `The answer is: X` (WizardMath's closing line; also
  "the final answer is X", colon optional, X up to the end of its sentence; prose such as "the answer is a
  bit of a simplification", over 3 words with no digit and no LaTeX, is no marker), `\\boxed{X}` (nested
  braces allowed) and GSM8K's `#### X`;
- without a marker, the last number in the text (`\\frac{a}{b}` with numbers counts as one).

`normalise(x)` makes two ways of writing one answer the same string:
- LaTeX dressing goes: `$`, `\\(`, `\\)`, `\\[`, `\\]`, `\\boxed{}`, `\\text{}`, `\\mathrm{}`, `\\left`, `\\right`,
  spacing commands, `^\\circ`; `\\dfrac`/`\\tfrac` are `\\frac`; a leading `x =` goes, and of a chain
  `a = b = c` the last side stays (`48 / 2 = 24` -> 24); a trailing `.` goes;
- a number is an exact fraction written canonically: thousands commas dropped (1,000 -> 1000), `-` or
  `−` signs, decimals (2.50 -> 2.5), fractions `a/b` and `\\frac{a}{b}` reduced; a value with a finite
  decimal expansion is written as a decimal (3/4 -> 0.75, so 3/4 == 0.75), any other as `a/b` (1/3 stays
  1/3, and 0.333 is another answer);
- units and currency: `$` and words after a number go (`$18.00`, `18 dollars` -> 18; `5 cm^2` -> 5). A
  percentage is the number before its `%` (`25%` and `25 percent` -> 25), as GSM8K writes percentages;
  so `25%` and `0.25` are different answers. A mixed number (`2 1/2`) is not recognised;
- anything else (an expression, a tuple, a word) is compared as text: lower case, no spaces.

`majority(answers)` -> (answer, agreement): the answer more than half of the K samples give, with its
share m/K; None and the largest share when no answer has a majority. An unparsed sample (None) counts
in K but never votes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from decimal import Decimal, localcontext
from fractions import Fraction

# ------------------------------------------------------------------------------------------- finding
_ANSWER_IS = re.compile(r"\bthe\s+(?:final\s+)?answer\s+is\s*[:：]?[ \t]*([^\n]*)", re.IGNORECASE)
# "The answer is 5 because ..." / "... is 18. Next": the answer ends with its sentence.
_SENTENCE_END = re.compile(r"(?<=\S)\.(?=\s|$)|\s+(?:because|since|as|which|so|and|given|for)\b", re.IGNORECASE)
_HASHES = re.compile(r"^[ \t]*####[ \t]*([^\n]*)", re.MULTILINE)
_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
_SIGN = "-−"
_NUMBER_CORE = re.compile(r"(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+")
_FRAC = re.compile(r"(-?)\\[dt]?frac\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}\s*\{\s*(-?\d+(?:\.\d+)?)\s*\}")
_FRAC_SHORT = re.compile(r"\\[dt]?frac(\d)(\d)")


def _braced(text: str, open_at: int) -> tuple[str, int] | None:
    """The text inside the braces that open at `open_at` (nested braces kept), and the index after them."""
    depth = 0
    for i in range(open_at, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[open_at + 1 : i], i + 1
    return None  # unbalanced: a response cut off inside the box


def _is_prose(raw: str) -> bool:
    """"the answer is a bit of a simplification": words, not an answer (no digit, no LaTeX, over 3 words)."""
    return not re.search(r"[\d\\]", raw) and len(raw.split()) > 3


def _markers(text: str) -> list[tuple[int, str]]:
    """(position, raw answer) of every explicit final-answer marker."""
    found = [(m.start(), raw) for m in _ANSWER_IS.finditer(text)
             if not _is_prose(raw := _SENTENCE_END.split(m.group(1), maxsplit=1)[0])]
    found += [(m.start(), m.group(1)) for m in _HASHES.finditer(text)]
    for m in _BOXED.finditer(text):
        inner = _braced(text, m.end() - 1)
        if inner is not None:
            found.append((m.start(), inner[0]))
    return [(at, raw) for at, raw in found if raw.strip()]


def _numbers(text: str) -> list[tuple[int, str]]:
    """(position, raw number) of every number and numeric \\frac in running text."""
    fracs = [(m.start(), m.end(), m.group(0)) for m in _FRAC.finditer(text)]
    found = [(start, raw) for start, _, raw in fracs]
    taken = 0  # numbers before this index belong to an earlier match (a \\frac's parts, a fraction's denominator)
    for m in _NUMBER_CORE.finditer(text):
        start, end = m.start(), m.end()
        if start < taken or any(a <= start < b for a, b, _ in fracs):
            continue
        before = text[start - 1] if start else ""
        if before and (before.isalpha() or before in "_^"):
            continue  # x2, a_1, cm^2: part of a name or an exponent, not a number
        if before and before in _SIGN and (start < 2 or not (text[start - 2].isalnum() or text[start - 2] in ")]}")):
            start -= 1  # a sign, not a minus between two terms (10-5)
        fraction = re.match(r"\s*/\s*\d+(?![\d.])", text[end:])
        if fraction:
            end += fraction.end()
        taken = end
        found.append((start, text[start:end]))
    return found


def parse_final_answer(text: str | None) -> str | None:
    """The raw final answer of a solution (see the module's docstring), or None when there is none."""
    if not text:
        return None
    markers = _markers(text)
    if markers:
        return max(markers)[1].strip()
    numbers = _numbers(text)
    return max(numbers)[1].strip() if numbers else None


# ------------------------------------------------------------------------------------------- normalising
_UNWRAP = re.compile(r"\\(?:boxed|fbox|text|textbf|mathrm|mathbf|mbox|operatorname)\s*\{")
_DROP = (
    "\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\quad", "\\qquad", "\\displaystyle", "\\(", "\\)", "\\[", "\\]",
    "^{\\circ}", "^\\circ", "\\circ", "°", "\\$",
)
_ASSIGN = re.compile(r"^[A-Za-z]\w*\s*=\s*(?=\S)")
_LEADING = re.compile(
    r"(?P<sign>[-−]?)\s*(?P<num>(?:\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?:\.\d+)?|\.\d+)(?:\s*/\s*(?P<den>[-−]?\d+(?:\.\d+)?))?"
)
# What may follow a number and still be its unit: words, with an exponent (cm^2, m²) or a per (km/h).
_UNIT = re.compile(r"(?:%|\s*percent\b.*|\s+[A-Za-z][A-Za-z'’.]*(?:\s*(?:\^\{?\d\}?|[²³]))?"
                   r"(?:\s*/\s*[A-Za-z]+)?(?:\s+[A-Za-z][A-Za-z'’.]*)*)?\s*", re.IGNORECASE)


def _unwrap(text: str) -> str:
    """`\\boxed{x}`, `\\text{x}`, ... -> x, however deep."""
    while m := _UNWRAP.search(text):
        inner = _braced(text, m.end() - 1)
        if inner is None:
            return text[: m.start()] + text[m.end():]
        text = text[: m.start()] + inner[0] + text[inner[1]:]
    return text


def _decimal(value: Fraction) -> str | None:
    """The exact decimal of a fraction whose denominator has no prime factors but 2 and 5, else None."""
    den = value.denominator
    for p in (2, 5):
        while den % p == 0:
            den //= p
    if den != 1:
        return None
    with localcontext() as ctx:
        ctx.prec = 200
        text = format((Decimal(value.numerator) / Decimal(value.denominator)).normalize(), "f")
    return text


def canonical_number(value: Fraction) -> str:
    """5 -> '5', 5/2 -> '2.5', 1/3 -> '1/3', -3/4 -> '-0.75'."""
    if value.denominator == 1:
        return str(value.numerator)
    return _decimal(value) or f"{value.numerator}/{value.denominator}"


def _as_number(text: str) -> str | None:
    m = _LEADING.fullmatch(text) or _LEADING.match(text)
    if m is None or not _UNIT.fullmatch(text[m.end():]):
        return None
    value = Fraction(m.group("num").replace(",", ""))
    if den := m.group("den"):
        denominator = Fraction(den.replace("−", "-"))
        if denominator == 0:
            return None
        value /= denominator
    if m.group("sign"):
        value = -value
    return canonical_number(value)


def normalise(answer: str | None) -> str | None:
    """One canonical string per answer (see the module's docstring); None for nothing."""
    if answer is None:
        return None
    text = _unwrap(answer.strip())
    for token in _DROP:
        text = text.replace(token, "")
    text = text.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("\\%", "%")
    text = _FRAC_SHORT.sub(r"\\frac{\1}{\2}", text)
    text = _FRAC.sub(lambda m: f"{m.group(1)}{m.group(2)}/{m.group(3)}", text)
    text = text.replace("$", "").strip().rstrip(".").strip()
    text = _ASSIGN.sub("", text)
    if "=" in text:  # "48 / 2 = 24", "10 * 6 = 60 plants in total": what it equals
        text = next((side.strip() for side in reversed(text.split("=")) if side.strip()), text)
    text = text.replace("−", "-")
    while len(text) > 1 and text[0] == "{" and text[-1] == "}" and _braced(text, 0) == (text[1:-1], len(text)):
        text = text[1:-1].strip()
    if not text:
        return None
    number = _as_number(text)
    if number is not None:
        return number
    return re.sub(r"\s+", "", text).lower()


def final_answer(text: str | None) -> str | None:
    """The normalised final answer of a response: `normalise(parse_final_answer(text))`."""
    return normalise(parse_final_answer(text))


def majority(answers: Sequence[str | None]) -> tuple[str | None, float]:
    """(the answer more than half of `answers` give, its share), or (None, the largest share)."""
    if not answers:
        return None, 0.0
    counts = Counter(a for a in answers if a is not None)
    if not counts:
        return None, 0.0
    top, n = counts.most_common(1)[0]  # ties go to the answer seen first; a tie is never a majority
    return (top if 2 * n > len(answers) else None), n / len(answers)


def agreement_count(answers: Sequence[str | None]) -> int:
    """How many of `answers` give the most common parsed answer (0 when none parsed)."""
    counts = Counter(a for a in answers if a is not None)
    return counts.most_common(1)[0][1] if counts else 0
