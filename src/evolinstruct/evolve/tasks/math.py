"""Math problems, as WizardMath evolves them (arXiv 2308.09583): upward evolution makes a problem harder,
downward evolution makes it easier; every kept problem is answered K times and kept only when a majority
of the K final answers agree.

- Operations (template set `math`): upward_add_steps, upward_more_quantities, upward_add_constraint,
  upward_change_unknown; downward_fewer_steps, downward_simpler_numbers, downward_sub_question. An
  operation's direction is its name's first word (`direction_of`). `--ops` weighs operations;
  `direction_weights("upward=3,downward=1")` turns direction weights into such an `--ops` string.
- Rules: the chat rules (empty_evolution, copied_prompt_words, the equality judge, sorry_short_response,
  punctuation_stopwords_only, truncated) plus `no_question` on the evolved problem and
  `inconsistent_answer` on its answers.
- Answer check (`MathChain.check_answer`): the chain's answer plus K-1 more (`math_samples`, default 3),
  each its own call (purposes answer_1 .. answer_{K-1}: own call keys, own sampling seeds, counted apart
  in stats.json `calls_by_purpose`) at the answer sampling settings. Final answers are parsed and
  normalised by mathanswer.py; a majority (more than K/2) keeps the problem with
  `"math": {"answer", "agreement", "answers"}` on its row; no majority eliminates it as
  `inconsistent_answer` with the K parsed answers as evidence. Seeds are answered once, as in chat.
- Tally (stats.json `task`): rule counts, success per operation and per direction, agreement histogram.
"""

from __future__ import annotations

import asyncio
import re
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from ...kv import parse_pairs
from ...models.base import Request, Result
from ...records import Record
from ..chain import Chain
from ..mathanswer import agreement_count, final_answer, majority
from ..rules import (
    RuleSet,
    Verdict,
    copied_prompt_words,
    empty_evolution,
    punctuation_stopwords_only,
    sorry_short_response,
)
from . import Task

NO_QUESTION = "no_question"
INCONSISTENT_ANSWER = "inconsistent_answer"
DEFAULT_SAMPLES = 3

UPWARD, DOWNWARD = "upward", "downward"
DIRECTIONS = (UPWARD, DOWNWARD)
# The template set's operations and their directions (an operation of a user's set is placed by its name).
OPERATIONS: dict[str, str] = {
    "upward_add_steps": UPWARD,
    "upward_more_quantities": UPWARD,
    "upward_add_constraint": UPWARD,
    "upward_change_unknown": UPWARD,
    "downward_fewer_steps": DOWNWARD,
    "downward_simpler_numbers": DOWNWARD,
    "downward_sub_question": DOWNWARD,
}


def direction_of(op: str) -> str:
    """upward, downward, or `other` for an operation named neither way (a user's own template set)."""
    if op in OPERATIONS:
        return OPERATIONS[op]
    head = op.split("_", 1)[0]
    return head if head in DIRECTIONS else "other"


def direction_weights(text: str, ops: Iterable[str] | None = None) -> str:
    """Direction weights -> an `--ops` weight string: "upward=3,downward=1" gives the upward operations 3/4
    of the draws and the downward ones 1/4, split evenly within a direction. A direction left out gets 0.

    `ops`: the operations to weigh (the `math` set's by default; a user's set's names, placed by
    `direction_of`)."""
    given = parse_pairs(text, "--directions")
    unknown = sorted(set(given) - set(DIRECTIONS))
    if unknown:
        raise ValueError(f"--directions: unknown direction '{unknown[0]}' (choose {', '.join(DIRECTIONS)})")
    if sum(given.values()) <= 0:
        raise ValueError("--directions: weights must be non-negative and not all zero")
    names = list(OPERATIONS if ops is None else ops)
    members = {d: [op for op in names if direction_of(op) == d] for d in DIRECTIONS}
    for direction, weight in given.items():
        if weight > 0 and not members[direction]:
            raise ValueError(f"--directions: no {direction} operation to weigh (operations: {', '.join(names)})")
    # Each operation weighs (its direction's weight) / (operations in that direction); scaled by their
    # product so that integer direction weights give integer operation weights (3:1 over 4 and 3 -> 9 and 4).
    scale = 1
    for d in DIRECTIONS:
        scale *= max(1, len(members[d]))
    parts = []
    for op in names:
        direction = direction_of(op)
        if direction in DIRECTIONS and given.get(direction, 0.0) > 0:
            weight = given[direction] * scale / len(members[direction])
            parts.append(f"{op}={weight:g}")
    return ",".join(parts)


# --------------------------------------------------------------------------------------------- rules
# Something to answer: a question mark, or an imperative or wh-phrase that asks for a value.
_ASKS = re.compile(
    r"\?|\b(?:find|compute|calculate|determine|evaluate|solve|simplify|work\s+out|figure\s+out|express|"
    r"show\s+that|prove|give|list|estimate|how\s+(?:many|much|long|far|old|often|fast|tall|big)|"
    r"what\s+(?:is|was|are|were|will|would|does|did|percent|fraction|number)|which)\b",
    re.IGNORECASE,
)
_NUMBER_WORDS = (
    "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen seventeen "
    "eighteen nineteen twenty thirty forty fifty sixty seventy eighty ninety hundred thousand million billion "
    "half halves third thirds quarter quarters twice thrice double triple dozen dozens"
)
_HAS_NUMBER = re.compile(r"\d|[½¼¾⅓⅔]|\b(?:" + "|".join(_NUMBER_WORDS.split()) + r")\b", re.IGNORECASE)


def no_question(evolved: str) -> Verdict | None:
    """The evolved problem must ask something answerable: a question mark or an asking phrase (find,
    compute, how many, what is, ...), and a number (digits or a number word) to work with."""
    asks = _ASKS.search(evolved) is not None
    has_number = _HAS_NUMBER.search(evolved) is not None
    if asks and has_number:
        return None
    return Verdict(NO_QUESTION, {"asks": asks, "has_number": has_number, "excerpt": evolved[:200]})


MATH = RuleSet(
    "math",
    (empty_evolution, copied_prompt_words, no_question),
    (sorry_short_response, punctuation_stopwords_only),
)


def samples_of(config: Any) -> int:
    """The run's `math_samples` (default 3), checked."""
    k = (config.algorithm.task_options or {}).get("math_samples", DEFAULT_SAMPLES)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"--math-samples must be a whole number of 1 or more (got {k!r})")
    return k


def rules(config: Any) -> RuleSet:
    samples_of(config)  # a bad option is refused before the chain is built
    return MATH


# --------------------------------------------------------------------------------------------- chain
class MathChain(Chain):
    """The chain with math's answer check: K answers per evolved problem, a majority or elimination."""

    def __init__(self, config: Any, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        self.samples = samples_of(config)

    async def _sample(self, record: Record, epoch: int, i: int) -> Result:
        purpose = f"answer_{i}"
        request = Request(record.messages(self.separator, with_output=False), self._sampling(record.id, purpose))
        return await self.roles.responder(purpose, request, self._remaining(epoch, 0))

    async def check_answer(self, record: Record, epoch: int) -> Verdict | None:
        """The chain's answer (record.output) is sample 0; answer_1 .. answer_{K-1} are asked at once.

        A failed extra call is what `_evolve_once`'s `fail("answer", ...)` makes of a failed answer: the
        record's status is "error" (reason call_failed, the purpose and the error as evidence) and no verdict
        is returned, so the chain stops there and the next run retries the call (the stored ones replay).
        """
        results = await asyncio.gather(*(self._sample(record, epoch, i) for i in range(1, self.samples)),
                                       return_exceptions=True)
        for result in results:  # a stop (budget, a fatal backend error) once every sibling call has ended
            if isinstance(result, BaseException):
                raise result
        for i, result in enumerate(results, start=1):
            if not result.ok:
                record.status, record.reason = "error", "call_failed"
                record.evidence = {"purpose": f"answer_{i}", "error": result.error}
                return None
        answers = [final_answer(record.output), *(final_answer(r.text) for r in results)]
        answer, agreement = majority(answers)
        if answer is None:
            return Verdict(INCONSISTENT_ANSWER, {"answers": answers, "agreement": round(agreement, 4),
                                                 "samples": self.samples})
        record.meta["math"] = {"answer": answer, "agreement": round(agreement, 4), "answers": answers}
        return None


# --------------------------------------------------------------------------------------------- tally
def _outcomes(counter: Counter) -> dict[str, Any]:
    kept, eliminated = counter["kept"], counter["eliminated"]
    decided = kept + eliminated
    return {
        "attempted": counter["attempted"], "kept": kept, "eliminated": eliminated, "errors": counter["error"],
        "success_rate": round(kept / decided, 4) if decided else None,
    }


class MathTally:
    """stats.json `task` for math: rule counts, success per operation and direction, answer agreement."""

    def __init__(self) -> None:
        self.rules: Counter = Counter()
        self.by_op: dict[str, Counter] = defaultdict(Counter)
        self.by_direction: dict[str, Counter] = defaultdict(Counter)
        self.agreement: Counter = Counter()  # "m/K" -> problems whose most common answer m of K samples gave
        self.samples = 0
        self.unparsed = 0

    def add(self, record: Record) -> None:
        if record.epoch == 0:
            return
        for counter in (self.by_op[record.op], self.by_direction[direction_of(record.op)]):
            counter["attempted"] += 1
            counter[record.status] += 1
        if record.status == "eliminated":
            self.rules[record.reason] += 1
        answers = None
        if record.status == "kept" and isinstance(record.meta.get("math"), dict):
            answers = record.meta["math"].get("answers")
        elif record.reason == INCONSISTENT_ANSWER:
            answers = record.evidence.get("answers")
        if isinstance(answers, list) and answers:
            self.agreement[f"{agreement_count(answers)}/{len(answers)}"] += 1
            self.samples += len(answers)
            self.unparsed += sum(1 for a in answers if a is None)

    def stats(self) -> dict[str, Any]:
        def share(key: str) -> tuple[float, int]:  # the highest agreement first
            m, _, k = key.partition("/")
            return -int(m) / max(int(k), 1), int(k)

        return {
            "name": "math",
            "rules": dict(sorted(self.rules.items())),
            "by_op": {op: _outcomes(c) for op, c in sorted(self.by_op.items())},
            "by_direction": {d: _outcomes(c) for d, c in sorted(self.by_direction.items())},
            "agreement": {key: self.agreement[key] for key in sorted(self.agreement, key=share)},
            "answers_sampled": self.samples,
            "answers_unparsed": self.unparsed,
        }


TASK = Task(
    name="math",
    templates="math",
    rules=rules,
    chain="evolinstruct.evolve.tasks.math:MathChain",
    tally=MathTally,
    options=("math_samples",),
)
