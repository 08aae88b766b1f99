"""Scrub: empty instructions, refusals and AI boilerplate, and leftovers of the evolving prompts."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from ...evolve.rules import LEFTOVER_PATTERNS
from .base import Removal, Row, RowFilter

if TYPE_CHECKING:
    from .config import FilterConfig

# Refusals and AI boilerplate in responses (and instructions): the phrases the WizardLM and
# ShareGPT cleaning scripts drop. Specific phrases only: "I cannot stress enough" must survive.
REFUSAL_PATTERNS = [
    # the speaker talking about itself ("As an AI language model, I ..."), not "used as an AI assistant, it"
    r"\bas an ai(?: language model| model| assistant)?,? i\b",
    r"\bas a (?:large )?language model,? i\b",
    r"\bi(?:'|’)?m sorry,? but (?:i|as an ai) (?:cannot|can(?:'|’)?t|am unable|am not able)\b",
    r"\bi am sorry,? but (?:i|as an ai) (?:cannot|can(?:'|’)?t|am unable|am not able)\b",
    r"\bi apologi[sz]e,? but i (?:cannot|can(?:'|’)?t|am unable)\b",
    r"\bi (?:cannot|can(?:'|’)?t) (?:fulfill|comply with|assist with) (?:this|that|your)\b",
    r"\bi(?:'|’)?m (?:unable|not able) to (?:fulfill|comply with|assist with|help with) (?:this|that|your)\b",
    r"\bviolates? openai(?:'|’)?s (?:content |use case )?polic",
]
_REFUSALS = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]
_LEFTOVERS = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in LEFTOVER_PATTERNS]


def scrub_evidence(instruction: str, input_text: str, output: str) -> Removal | None:
    """The first leftover, else the first refusal, in instruction, input then output."""
    if not instruction.strip():
        return Removal("empty_instruction", {})
    for reason, patterns in (("prompt_leftover", _LEFTOVERS), ("refusal", _REFUSALS)):
        for fieldname, text in (("instruction", instruction), ("input", input_text), ("output", output)):
            for pattern in patterns:
                if found := pattern.search(text):
                    return Removal(reason, {"field": fieldname, "match": found.group(0), "pattern": pattern.pattern})
    return None


class Scrub(RowFilter):
    name = "scrub"
    reasons = ("empty_instruction", "refusal", "prompt_leftover")

    @staticmethod
    def enabled(config: FilterConfig) -> bool:
        return config.scrub

    @classmethod
    def runs(cls, config: FilterConfig) -> bool:
        return True  # an empty instruction goes even with --no-scrub: there is nothing to train on

    def check(self, row: Row) -> Removal | None:
        if not row.instruction.strip():
            return Removal("empty_instruction", {})
        return scrub_evidence(row.instruction, row.input, row.output) if self.config.scrub else None
