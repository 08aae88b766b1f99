"""Elimination rules: the paper's four (section 3.3), each returning a reason with its evidence, and
the rule list of each task.

1. no_information_gain: the equality judge answers "Equal" (the appendix prompt; an LLM call).
2. sorry_short_response: the response contains "sorry" and is under 80 words.
3. punctuation_stopwords_only: the response is nothing but punctuation and stop words.
4. copied_prompt_words: the evolved instruction copies the evolving prompt's words.

Besides the paper's four:
- empty_evolution: the evolved instruction is empty.
- truncated: the evolving call stopped at max_tokens (finish_reason "length"): a cut-off instruction is
  not a harder instruction, whatever its words.
- truncated_answer: the response stopped at max_tokens, only with `evolve --drop-truncated`; by default
  such a response is kept and its row marked `"truncated": true`.

Rules 4, "truncated" and "empty_evolution" look only at the evolving call, so they run before any further
call; rules 2-3 need the response; rule 1 needs a judge call. The chain (chain.py) runs the cheap ones
first whenever that cannot change the verdict. A task (chat today; code, math, conversation later) is a
`RuleSet`: the rules on the instruction, the rules on the response, whether rule 1 runs, and whether a
truncated evolution is eliminated.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

NO_INFORMATION_GAIN = "no_information_gain"
SORRY_SHORT = "sorry_short_response"
PUNCT_STOPWORDS = "punctuation_stopwords_only"
COPIED_PROMPT = "copied_prompt_words"
EMPTY = "empty_evolution"
TRUNCATED = "truncated"
TRUNCATED_ANSWER = "truncated_answer"
REASONS = (NO_INFORMATION_GAIN, SORRY_SHORT, PUNCT_STOPWORDS, COPIED_PROMPT, EMPTY, TRUNCATED, TRUNCATED_ANSWER)
LENGTH = "length"  # the finish_reason of a completion cut off at max_tokens

# Prompt leftovers, in one place for both of their uses:
# - COPIED_PHRASES: words the evolving prompts use about themselves (paper, rule 4), lower-case. The repo's in-depth prompts
# say "#The Given Prompt#", the paper's "#Given Prompt#"; both contain "given prompt".
COPIED_PHRASES = (
    "given prompt",
    "rewritten prompt",
    "created prompt",
    "#rewritten prompt#",
    "#created prompt#",
    "#given prompt#",
    "prompt rewriter",
    "prompt creator",
)
# - LEFTOVER_PATTERNS: the same leftovers as `filter --scrub` finds them in any dataset, evolved or not.
#   Stricter than rule 4 (a marker with '#' or a colon), so an ordinary "the given prompt" in someone
#   else's data is not dropped.
LEFTOVER_PATTERNS = (
    r"#\s*(?:the\s+)?given\s+prompt\s*#",
    r"#\s*rewritten\s+prompt\s*#",
    r"#\s*created\s+prompt\s*#",
    r"^\s*(?:the\s+)?(?:given|rewritten|created)\s+prompt\s*:",
    r"\b(?:given|rewritten|created) prompt\s*:",
)

# NLTK's English stop-word list, which the rule's usual implementations use.
STOP_WORDS = frozenset(
    """i me my myself we our ours ourselves you you're you've you'll you'd your yours yourself yourselves he him
    his himself she she's her hers herself it it's its itself they them their theirs themselves what which who
    whom this that that'll these those am is are was were be been being have has had having do does did doing a
    an the and but if or because as until while of at by for with about against between into through during
    before after above below to from up down in out on off over under again further then once here there when
    where why how all any both each few more most other some such no nor not only own same so than too very s t
    can will just don don't should should've now d ll m o re ve y ain aren aren't couldn couldn't didn didn't
    doesn doesn't hadn hadn't hasn hasn't haven haven't isn isn't ma mightn mightn't mustn mustn't needn needn't
    shan shan't shouldn shouldn't wasn wasn't weren weren't won won't wouldn wouldn't""".split()
)

_WORD = re.compile(r"[A-Za-z0-9']+|[^\sA-Za-z0-9']+")
_PUNCT = set(string.punctuation) | set("“”‘’…–—«»·•")


@dataclass(frozen=True, slots=True)
class Verdict:
    reason: str
    evidence: dict[str, Any]


Rule = Callable[[str], "Verdict | None"]


def empty_evolution(evolved: str) -> Verdict | None:
    if not evolved.strip():
        return Verdict(EMPTY, {"instruction_chars": len(evolved)})
    return None


def truncation(purpose: str, finish_reason: str | None) -> Verdict | None:
    """A completion cut off at max_tokens: `truncated` for an evolution, `truncated_answer` for a response."""
    if finish_reason != LENGTH:
        return None
    return Verdict(TRUNCATED if purpose == "evolve" else TRUNCATED_ANSWER, {"finish_reason": LENGTH, "purpose": purpose})


def copied_phrase(evolved: str, phrases: tuple[str, ...]) -> Verdict | None:
    """Rule 4's check for any list of lower-case phrases: the first one found, with 30 characters around it."""
    lowered = evolved.lower()
    for phrase in phrases:
        at = lowered.find(phrase)
        if at >= 0:
            start = max(0, at - 30)
            return Verdict(COPIED_PROMPT, {"phrase": phrase, "context": evolved[start : at + len(phrase) + 30]})
    return None


def copied_prompt_words(evolved: str) -> Verdict | None:
    """Rule 4: the evolved instruction copies the evolving prompt's words about itself."""
    return copied_phrase(evolved, COPIED_PHRASES)


def word_count(text: str) -> int:
    return len(text.split())


def sorry_short_response(response: str) -> Verdict | None:
    """Rule 2: "sorry" in a response of under 80 words."""
    words = word_count(response)
    if "sorry" in response.lower() and words < 80:
        return Verdict(SORRY_SHORT, {"words": words, "excerpt": response[:160]})
    return None


def punctuation_stopwords_only(response: str) -> Verdict | None:
    """Rule 3: nothing but punctuation and stop words."""
    tokens = _WORD.findall(response)
    content = [t for t in tokens if t.lower() not in STOP_WORDS and not all(ch in _PUNCT for ch in t)]
    if not content:
        return Verdict(PUNCT_STOPWORDS, {"excerpt": response[:160], "tokens": len(tokens)})
    return None


_NOT_EQUAL = re.compile(r"\bnot\s+equal\b|\bunequal\b", re.IGNORECASE)
_EQUAL = re.compile(r"\bequal\b", re.IGNORECASE)


def parse_equality(answer: str) -> bool | None:
    """True when the judge says Equal, False for Not Equal, None when it says neither.

    The paper's prompt asks for exactly "Equal" or "Not Equal"; weak judges add words, so the first
    verdict-like phrase wins and "not equal" is looked for before "equal".
    """
    m_not, m_eq = _NOT_EQUAL.search(answer), _EQUAL.search(answer)
    if m_not and (not m_eq or m_not.start() <= m_eq.start()):
        return False
    if m_eq:
        return True
    return None


def check_equality(answer: str) -> tuple[Verdict | None, bool]:
    """Rule 1. Returns (verdict, parsed); an unparseable answer keeps the evolution and is counted."""
    equal = parse_equality(answer)
    if equal:
        return Verdict(NO_INFORMATION_GAIN, {"judge_answer": answer[:200]}), True
    return None, equal is not None


@dataclass(frozen=True, slots=True)
class RuleSet:
    """A task's elimination rules, run in order; the first that fires eliminates."""

    name: str
    on_instruction: tuple[Rule, ...]
    on_response: tuple[Rule, ...]
    equality: bool = True  # rule 1, a judge call between the two
    truncated: bool = True  # eliminate an evolution cut off at max_tokens (reason `truncated`)

    def check_truncated(self, finish_reason: str | None) -> Verdict | None:
        """The evolving call's finish: a truncated evolution is eliminated before any rule on its text."""
        return truncation("evolve", finish_reason) if self.truncated else None

    def check_instruction(self, evolved: str) -> Verdict | None:
        for rule in self.on_instruction:
            if verdict := rule(evolved):
                return verdict
        return None

    def check_response(self, response: str) -> Verdict | None:
        for rule in self.on_response:
            if verdict := rule(response):
                return verdict
        return None


CHAT = RuleSet("chat", (empty_evolution, copied_prompt_words), (sorry_short_response, punctuation_stopwords_only))


# The chat task's checks, by the names the paper's rules are known under.
check_instruction = CHAT.check_instruction
check_response = CHAT.check_response
