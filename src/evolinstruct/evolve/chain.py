"""One lineage of the Evol-Instruct loop: a seed, answered, then evolved epoch after epoch.

A chain knows nothing of scheduling (executor.py runs many at once) or storage: each finished step is
handed to `commit` (the run store's save_step in a run). For every seed, in order:
  answer the seed (or keep its output) ->
  for epoch 1..E:
    choose an operation from (run seed, current id, epoch) -> evolve ->
    cheap rules on the evolving call (truncated, empty, copied prompt words) ->
    equality judge (rule 1) -> answer -> rules 2 and 3 on the response ->
    kept: the child becomes the chain's current instruction; eliminated: the parent stays.

An answer cut off at max_tokens (finish_reason "length") is marked `meta["truncated"] = True` (the row's
`"truncated": true`), or eliminated as `truncated_answer` with `drop_truncated`. A seed whose answer is
dropped so is written to eliminated.jsonl, and its chain still evolves the seed's instruction.

This is the paper's pool: each epoch evolves every instruction in the pool once, a success replaces
its parent in the pool for the next epoch, a failure returns the parent. There is no barrier between
epochs or seeds. Every call is replayed from the store on a rerun, so a resumed run repeats no paid call
and ends with the same dataset. Which rules eliminate is the task's `RuleSet` (rules.py).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from ..calls import CachedLLM
from ..models.base import Request, Result, Sampling
from ..records import Record, Seed, child_record_id, join_input, request_seed, seed_record_id
from .config import EvolveConfig
from .language import LanguageGuard
from .operations import choose_data_format, choose_operation
from .rules import CHAT, RuleSet, Verdict, check_equality, truncation
from .templates import TemplateSet

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Progress:
    """Live counts for the progress display; the final numbers come from the run store."""

    steps_done: int = 0
    kept: int = 0
    eliminated: int = 0
    errors: int = 0
    equality_unparsed: int = 0
    # The longest retry wait in progress (seconds, why: "429", "503", "connect"...), refreshed about once
    # a second while there is one (run.py); None when no call waits.
    waiting: tuple[float, str] | None = None
    # (endpoints admitted, endpoints) when a model is served by several, refreshed with `waiting`.
    endpoints: tuple[int, int] | None = None
    # Speculative calls (batch rounds) whose answer was never used: an answer of an eliminated evolution,
    # an evolution of a seed whose answer failed.
    wasted: int = 0


@dataclass(slots=True)
class RoleCalls:
    """The calls of each role: the evolver rewrites, the responder answers, the judge checks equality."""

    evolver: CachedLLM
    responder: CachedLLM
    judge: CachedLLM


# commit(records, seed_index, epoch_done, current_id, state): one finished step, stored atomically.
Commit = Callable[[list[Record], int, int, str, str], None]


def _started(coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
    """A speculative call as a task. If the chain stops before awaiting it (a fatal error, a budget), its
    exception is retrieved here, so that it is not logged a second time as never retrieved."""
    task = asyncio.ensure_future(coro)
    task.add_done_callback(lambda t: t.cancelled() or t.exception())
    return task


class Chain:
    """Runs lineages: `await chain.run(seed)` takes one seed through every epoch."""

    def __init__(
        self,
        config: EvolveConfig,
        templates: TemplateSet,
        weights: dict[str, float],
        roles: RoleCalls,
        commit: Commit,
        on_step: Callable[[Progress], None] | None = None,
        rules: RuleSet | None = None,
        weights_for: Callable[[int], dict[str, float]] | None = None,
    ) -> None:
        self.algorithm, self.sampling = config.algorithm, config.sampling
        self.separator = config.source.input_separator
        self.drop_truncated = config.algorithm.drop_truncated
        self.templates = templates
        self.weights = weights
        self.weights_for = weights_for  # a seed's own weights by seed index (adaptive.py); None: `weights`
        self.roles = roles
        self.commit = commit
        self.rules = rules or CHAT  # the task's rules (tasks/), given by run.py
        self.language = LanguageGuard(config.algorithm.language_guard)  # rule language_changed (language.py)
        self.progress = Progress()
        self.on_step = on_step or (lambda _p: None)
        # Batch rounds (run.py sets it for --batch): ask the equality judge and the answer of an evolution
        # at once, and a seed's answer with its first evolution, so a run of E epochs takes at most 2E + 1
        # rounds. The calls and the dataset are those of the online chain; only their timing differs.
        self.speculative = False

    # ---------------------------------------------------------------- requests
    def _sampling(self, record_id: str, purpose: str, judge: bool = False) -> Sampling:
        s = self.sampling
        seed = request_seed(self.algorithm.seed, record_id, purpose)
        if judge:
            return Sampling(temperature=0.0, top_p=1.0, max_tokens=s.judge_max_tokens, seed=seed)
        return Sampling(temperature=s.temperature, top_p=s.top_p, max_tokens=s.max_tokens, seed=seed)

    def _remaining(self, epoch: int, calls_left_in_epoch: int) -> int:
        """Calls a chain still has after this one: the rest of this epoch plus 3 per later epoch."""
        return calls_left_in_epoch + 3 * (self.algorithm.epochs - epoch)

    async def _answer(self, record: Record, epoch: int) -> Result:
        request = Request(record.messages(self.separator, with_output=False), self._sampling(record.id, "answer"))
        return await self.roles.responder("answer", request, self._remaining(epoch, 0))

    def _truncated_answer(self, record: Record, result: Result) -> Verdict | None:
        """Mark a record whose answer was cut off at max_tokens; the verdict when such answers are dropped."""
        verdict = truncation("answer", result.finish_reason)
        if verdict is None:
            return None
        record.meta["truncated"] = True
        return verdict if self.drop_truncated else None

    def _tick(self, record: Record | None = None) -> None:
        p = self.progress
        p.steps_done += 1
        if record is not None:
            if record.status == "kept":
                p.kept += 1
            elif record.status == "eliminated":
                p.eliminated += 1
            else:
                p.errors += 1
        self.on_step(p)

    # ---------------------------------------------------------------- one chain
    async def run(self, seed: Seed) -> None:
        c = self.algorithm
        root_id = seed_record_id(seed.index, seed.instruction, seed.input)
        root = Record(
            id=root_id, root_id=root_id, parent_id=None, epoch=0, op="seed",
            instruction=seed.instruction, input=seed.input, meta={"source": seed.source}, history=seed.history,
        )
        self.language.seed(root_id, root.instruction, root.meta, whole=root.prompt(self.separator))
        weights = self.weights_for(seed.index) if self.weights_for else self.weights
        # Speculative: epoch 1 evolves the seed's instruction while the seed is answered (it needs no answer).
        first = _started(self._evolve_once(root, 1, weights)) if self.speculative else None
        if c.seed_responses == "keep" and seed.output.strip():
            root.output, root.model = seed.output, "seed-file"
        else:
            result = await self._answer(root, 0)
            root.model = self.roles.responder.model
            if not result.ok:
                if first is not None:
                    await first  # its calls are stored (and replayed by the rerun); the record is not kept
                    self.progress.wasted += 1
                root.status, root.reason, root.evidence = "error", "call_failed", {"purpose": "answer", "error": result.error}
                self.commit([root], seed.index, 0, root_id, "error")
                self._tick(root)
                return
            root.output = result.text
            if verdict := self._truncated_answer(root, result) or self.language.check(root_id, root.output, "answer"):
                root.status, root.reason, root.evidence = "eliminated", verdict.reason, verdict.evidence
        self.commit([root], seed.index, 0, root_id, "running")
        self._tick(root)

        current = root
        for epoch in range(1, c.epochs + 1):
            child = await first if first is not None and epoch == 1 else await self._evolve_once(current, epoch, weights)
            state = "error" if child.status == "error" else ("done" if epoch == c.epochs else "running")
            if child.status == "kept":
                current = child
            self.commit([child], seed.index, epoch, current.id, state)
            self._tick(child)
            if child.status == "error":
                # Stop this chain; its failed call is retried on the next run. The remaining epochs
                # are counted as not attempted.
                return

    async def _evolve_once(self, parent: Record, epoch: int, weights: dict[str, float] | None = None) -> Record:
        c, t = self.algorithm, self.templates
        op = choose_operation(weights or self.weights, c.seed, parent.id, epoch)
        data_format = None
        if t.data_formats(op):
            data_format = choose_data_format(t.data_formats(op), c.seed, parent.id, epoch)
        given = join_input(parent.instruction, parent.input, self.separator)
        child_id = child_record_id(parent.id, epoch, op)
        child = Record(
            id=child_id, root_id=parent.root_id, parent_id=parent.id, epoch=epoch, op=op,
            instruction="", model=self.roles.evolver.model, history=self.child_history(parent, op),
        )
        if data_format:
            child.meta["data_format"] = data_format

        def fail(purpose: str, result: Result) -> Record:
            child.status, child.reason = "error", "call_failed"
            child.evidence = {"purpose": purpose, "error": result.error}
            return child

        def eliminate(reason: str, evidence: dict) -> Record:
            child.status, child.reason, child.evidence = "eliminated", reason, evidence
            return child

        request = Request(t.messages(self.evolving_prompt(parent, op, t.render(op, given, data_format))),
                          self._sampling(child_id, "evolve"))
        evolved = await self.roles.evolver("evolve", request, self._remaining(epoch, 2))
        if not evolved.ok:
            return fail("evolve", evolved)
        child.instruction = t.extract(op, evolved.text)  # the whole answer, or after a final marker

        # Cheap rules first: they need no further call and no later rule could save the child.
        verdict = (self.rules.check_truncated(evolved.finish_reason) or self.rules.check_instruction(child.instruction)
                   or self.language.check(child.root_id, child.instruction, "instruction")
                   or self.check_new_turn(child, parent))
        if verdict:
            return eliminate(verdict.reason, verdict.evidence)

        speculative: asyncio.Future[Result] | None = None
        if c.equality_check and self.rules.equality and self.judges(op):
            judge_prompt = t.render_equality(given, child.instruction)
            if self.speculative:  # the answer depends only on the evolved instruction: ask it with the judge
                speculative = _started(self._answer(child, epoch))
            judged = await self.roles.judge(
                "equality",
                Request([{"role": "user", "content": judge_prompt}], self._sampling(child_id, "equality", judge=True)),
                self._remaining(epoch, 1),
            )
            if not judged.ok:
                await self._discard(speculative)
                return fail("equality", judged)
            verdict, parsed = check_equality(judged.text)
            child.meta["equality_judge"] = judged.text.strip()[:80]
            if not parsed:
                self.progress.equality_unparsed += 1
                child.meta["equality_unparsed"] = True
            if verdict:
                await self._discard(speculative)
                return eliminate(verdict.reason, verdict.evidence)

        answered = await speculative if speculative is not None else await self._answer(child, epoch)
        if not answered.ok:
            return fail("answer", answered)
        child.output = answered.text
        dropped = self._truncated_answer(child, answered)  # marks the record either way
        verdict = (self.rules.check_response(child.output) or dropped
                   or self.language.check(child.root_id, child.output, "answer") or await self.check_answer(child, epoch))
        if verdict:
            return eliminate(verdict.reason, verdict.evidence)
        return child

    async def _discard(self, speculative: asyncio.Future[Result] | None) -> None:
        """A speculative answer never used: awaited (it is paid for and stored), counted as wasted."""
        if speculative is not None:
            await speculative
            self.progress.wasted += 1

    # Hooks of a chain variant that evolves conversations (tasks/conversation.py); the plain chain's are no-ops.
    def child_history(self, parent: Record, op: str) -> list[dict[str, str]]:
        """The earlier turns of a child: its parent's (a follow-up adds the parent's own turn)."""
        return parent.history

    def evolving_prompt(self, parent: Record, op: str, rendered: str) -> str:
        """The evolving prompt as sent: the template set's text (a variant may put context before it)."""
        return rendered

    def check_new_turn(self, child: Record, parent: Record) -> Verdict | None:
        """A variant's own rule on a new instruction, before the equality judge."""
        return None

    def judges(self, op: str) -> bool:
        """Whether rule 1 (the equality judge) runs for `op` (a follow-up has no turn it replaces)."""
        return True

    async def check_answer(self, record: Record, epoch: int) -> Verdict | None:
        """A chain variant's own check of a kept evolution's answer, after the task's rules (the code task
        runs the code, the math task asks for more answers and wants a majority). It may add evidence to
        `record.meta`; the plain chain has none."""
        return None
