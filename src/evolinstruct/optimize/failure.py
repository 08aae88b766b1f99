"""When a dev evolution failed: the paper's failure detector on the answer, our elimination rules, or both.

- paper: Auto Evol-Instruct's detector (official optimizer.py): the answer opens with one of a few phrases
  ('Understood', 'What', 'Sure', "I'm sorry"...) and ends with '?', or contains 'please provide' or
  'not possible' (any case).
- rules: evolve's elimination rules for chat (evolve/rules.py): the evolution cut off at max tokens, empty,
  or copying the prompt's words; the equality judge says it is no harder (rule 1); the answer is a short
  'sorry' or only punctuation and stop words.
- both (the default): failed if either says so.
"""

from __future__ import annotations

from .prompts import load_prompts

FAILURE_MODES = ("paper", "rules", "both")


def paper_failure(answer: str) -> str | None:
    """The check of the paper's detector that fires on `answer`, or None when the answer is not a failure."""
    p = load_prompts()
    text = answer.strip()
    if text.endswith("?"):
        for opener in p.question_openers:
            if text.startswith(opener):
                return f"question:{opener}"
    lowered = text.lower()
    for phrase in p.failure_phrases:
        if phrase in lowered:
            return f"contains:{phrase}"
    return None


def failed(mode: str, paper: str | None, rules: str | None) -> bool:
    if mode == "paper":
        return paper is not None
    if mode == "rules":
        return rules is not None
    return paper is not None or rules is not None
