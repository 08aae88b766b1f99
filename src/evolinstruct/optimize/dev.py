"""A method's dev metrics: evolve each dev instruction once, answer it, and count the failures.

As the official optimizer: success = the share of dev evolutions that did not fail, score = success x mean
answer length / mean evolved-instruction length (characters). Failure is the paper's detector, our rules, or
either (failure.py); both success rates are always measured and reported, `mode` says which one decides.
The calls of one item: evolve -> (equality judge, answer) at once; the items of a dev set all at once.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from statistics import fmean
from typing import Any

from ..evolve.rules import CHAT, RuleSet, check_equality
from ..evolve.templates import TemplateSet, extract_final
from ..models.base import Request, Result
from .failure import failed, paper_failure
from .prompts import evolving_prompt, load_prompts

# call(purpose, request) -> Result: the role's CachedLLM, raising when a call failed (loop.py)
Call = Callable[[str, Request], Awaitable[Result]]


@dataclass(frozen=True, slots=True)
class Item:
    """One seed of the split: its record id (what sampling seeds derive from) and the text to evolve."""

    id: str
    text: str


@dataclass(slots=True)
class DevMetrics:
    n: int
    success: float  # by the chosen detector: what decides
    success_paper: float
    success_rules: float
    score: float
    failures: dict[str, dict[str, int]] = field(default_factory=dict)  # detector -> reason -> count

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "success": self.success, "success_paper": self.success_paper,
                "success_rules": self.success_rules, "score": self.score, "failures": self.failures}


@dataclass(slots=True)
class Outcome:
    evolved: str
    answer: str
    paper: str | None
    rules: str | None


class DevEvaluator:
    """Dev metrics of methods over one dev set; `sampling(purpose, item_id)` gives each request's sampling."""

    def __init__(self, items: list[Item], evol: Call, sampling: Callable[[str, str], Any], mode: str,
                 equality: TemplateSet, rules: RuleSet = CHAT) -> None:
        self.items, self.evol, self.sampling, self.mode = items, evol, sampling, mode
        self.equality, self.rules = equality, rules
        self.prompts = load_prompts()

    def extract(self, text: str) -> str:
        return extract_final(text, self.prompts.final_markers)

    async def evolve(self, method: str, text: str, item_id: str, purpose: str) -> Result:
        request = Request([{"role": "user", "content": evolving_prompt(method, text)}], self.sampling(purpose, item_id))
        return await self.evol(purpose, request)

    async def _one(self, method: str, item: Item) -> Outcome:
        evolved_call = await self.evolve(method, item.text, item.id, "dev_evolve")
        evolved = self.extract(evolved_call.text)
        verdict = self.rules.check_truncated(evolved_call.finish_reason) or self.rules.check_instruction(evolved)

        async def judge() -> str | None:
            if verdict is not None or not self.rules.equality:
                return None
            prompt = self.equality.render_equality(item.text, evolved)
            judged = await self.evol("equality", Request([{"role": "user", "content": prompt}],
                                                          self.sampling("equality", item.id)))
            found, _parsed = check_equality(judged.text)
            return found.reason if found else None

        async def answer() -> str:
            if not evolved.strip():
                return ""
            request = Request([{"role": "system", "content": self.prompts.answer_system},
                               {"role": "user", "content": evolved}], self.sampling("dev_answer", item.id))
            return (await self.evol("dev_answer", request)).text

        judged, answered = await asyncio.gather(judge(), answer())
        rules = verdict.reason if verdict else judged
        if rules is None and (late := self.rules.check_response(answered)):
            rules = late.reason
        return Outcome(evolved, answered, paper_failure(answered) if evolved.strip() else "empty", rules)

    async def metrics(self, method: str) -> DevMetrics:
        outcomes = await asyncio.gather(*(self._one(method, item) for item in self.items))
        return summarize(outcomes, self.mode)


def summarize(outcomes: list[Outcome], mode: str) -> DevMetrics:
    n = len(outcomes)
    ok = [not failed(mode, o.paper, o.rules) for o in outcomes]
    success = sum(ok) / n if n else 0.0
    mean_instruction = fmean(len(o.evolved) for o in outcomes) if n else 0.0
    mean_answer = fmean(len(o.answer) for o in outcomes) if n else 0.0
    score = success * mean_answer / mean_instruction if mean_instruction else 0.0
    return DevMetrics(
        n=n, success=round(success, 6),
        success_paper=round(sum(o.paper is None for o in outcomes) / n, 6) if n else 0.0,
        success_rules=round(sum(o.rules is None for o in outcomes) / n, 6) if n else 0.0,
        score=round(score, 6),
        failures={"paper": dict(sorted(Counter(o.paper for o in outcomes if o.paper).items())),
                  "rules": dict(sorted(Counter(o.rules for o in outcomes if o.rules).items()))},
    )
