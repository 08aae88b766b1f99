"""Auto Evol-Instruct's prompts (arXiv 2406.00770), as the official optimizer sends them, and the method as a
template set that `evolve --templates` uses.

The strings live in auto_evol_prompts.json, byte for byte from the official code (scripts/build_auto_evol.py
regenerates it from ../shared/data/prompts). How they are put together, as optimizer.py @e26b08d does:
- evolving: one user message, the method followed directly by the instruction;
- the evolved instruction: the text after '#Finally Rewritten Instruction#:' or a fallback marker
  (`TemplateSet.extract`); without any marker, the whole answer;
- answering: the system prompt `answer_system`, then the instruction;
- trajectory analysis: one user message, `trajectory_analysis` + json.dumps of the cases; then, in the same
  conversation, `method_optimization` + '```Method\\n' + the current method + '```\\n';
- the new method: the text of the '```Optimized Method' block (none: the current method stays).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

METHOD_OP = "auto_evol"  # the single operation of a method template set: its own op in a run's report


@dataclass(frozen=True, slots=True)
class AutoEvolPrompts:
    init_method: str
    trajectory_analysis: str
    method_optimization: str
    answer_system: str
    final_markers: tuple[str, ...]
    question_openers: tuple[str, ...]  # failure (a): an answer opening so and ending with '?'
    failure_phrases: tuple[str, ...]  # failure (b): an answer containing one (lower-case)
    source: str


@lru_cache(maxsize=1)
def load_prompts() -> AutoEvolPrompts:
    text = resources.files("evolinstruct.optimize").joinpath("auto_evol_prompts.json").read_text("utf-8")
    data = json.loads(text)
    detector = data["failure_detector"]
    return AutoEvolPrompts(
        init_method=data["init_method"],
        trajectory_analysis=data["trajectory_analysis"],
        method_optimization=data["method_optimization"],
        answer_system=data["answer_system"],
        final_markers=tuple(data["final_markers"]),
        question_openers=tuple(detector["starts_with_and_ends_with_question"]),
        failure_phrases=tuple(detector["contains_lowercase"]),
        source=data["source"],
    )


def evolving_prompt(method: str, instruction: str) -> str:
    return method + instruction


def cases_json(cases: list[dict[str, Any]]) -> str:
    """The trajectory as the official code writes it: json.dumps with its defaults."""
    return json.dumps(cases)


def optimization_prompt(method: str) -> str:
    return load_prompts().method_optimization + "```Method\n" + method + "```\n"


_OPTIMIZED = re.compile(r"```\s*Optimized Method[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_method(reply: str) -> str | None:
    """The method inside the reply's '```Optimized Method' block; None when there is none (or it is empty).

    Leading and trailing blank lines are dropped and one newline is put back at the end, so the instruction
    that follows the method starts on its own line, as after the initial method's '#Instruction#:'.
    A block the reply never closed (cut off at max tokens) is not a method."""
    m = _OPTIMIZED.search(reply)
    if m is None or not reply[m.end(1):].startswith("```"):
        return None
    body = m.group(1).strip()
    return body + "\n" if body else None


def method_template_set(method: str, name: str = "auto-evol") -> dict[str, Any]:
    """A template set (evolve/templates.py) with one operation: the method, followed by the instruction,
    the final instruction taken after Auto Evol-Instruct's markers. Equality and difficulty: the paper's."""
    from ..evolve.templates import load_templates

    prompts, paper = load_prompts(), load_templates("paper")
    return {
        "name": name,
        "source": f"{prompts.source}; the method learned by `evolinstruct optimize`" if method != prompts.init_method
        else prompts.source,
        "system": None,
        "operations": {METHOD_OP: {"kind": "in-depth", "method": method, "template": evolving_prompt(method, "{instruction}"),
                                   "final_markers": list(prompts.final_markers)}},
        "equality": paper.equality,
        "difficulty": paper.difficulty,
    }
