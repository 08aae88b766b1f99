"""The Evol-Instruct loop, streaming: each seed's lineage moves on as soon as its last call returns.

For every seed (a chain), in order:
  answer the seed (or keep its output) ->
  for epoch 1..E:
    choose an operation from (run seed, current id, epoch) -> evolve ->
    cheap rules on the instruction (empty, copied prompt words) ->
    equality judge (rule 1) -> answer -> rules 2 and 3 on the response ->
    kept: the child becomes the chain's current instruction; eliminated: the parent stays.

This is the paper's pool: each epoch evolves every instruction in the pool once, a success replaces
its parent in the pool for the next epoch, a failure returns the parent. There is no barrier between
epochs or seeds; at most `concurrency` requests are in flight, shared by up to `max_chains` chains. Each chain step commits its
records and position to the run store; every call is replayed from the store on a rerun, so a
resumed run repeats no paid call and ends with the same dataset.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from .backends.base import Request, Result, Sampling
from .config import EvolveConfig
from .elimination import check_equality, check_instruction, check_response
from .llm import BudgetExhausted, CachedLLM
from .operations import choose_data_format, choose_operation, request_seed
from .records import Record, Seed, child_record_id, seed_record_id
from .seeds import join_input
from .store import RunStore
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


@dataclass(slots=True)
class Roles:
    """Who does what: the evolver rewrites, the responder answers, the judge checks equality."""

    evolver: CachedLLM
    responder: CachedLLM
    judge: CachedLLM


class Evolver:
    def __init__(
        self,
        config: EvolveConfig,
        templates: TemplateSet,
        weights: dict[str, float],
        roles: Roles,
        store: RunStore,
        on_step: Callable[[Progress], None] | None = None,
    ) -> None:
        self.config = config
        self.templates = templates
        self.weights = weights
        self.roles = roles
        self.store = store
        self.progress = Progress()
        self.on_step = on_step or (lambda _p: None)

    # ---------------------------------------------------------------- requests
    def _sampling(self, record_id: str, purpose: str, judge: bool = False) -> Sampling:
        c = self.config
        seed = request_seed(c.seed, record_id, purpose)
        if judge:
            return Sampling(temperature=0.0, top_p=1.0, max_tokens=c.judge_max_tokens, seed=seed)
        return Sampling(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=seed)

    def _remaining(self, epoch: int, calls_left_in_epoch: int) -> int:
        """Calls a chain still has after this one: the rest of this epoch plus 3 per later epoch."""
        return calls_left_in_epoch + 3 * (self.config.epochs - epoch)

    async def _answer(self, record: Record, epoch: int) -> Result:
        prompt = join_input(record.instruction, record.input, self.config.input_separator)
        request = Request([{"role": "user", "content": prompt}], self._sampling(record.id, "answer"))
        return await self.roles.responder("answer", request, self._remaining(epoch, 0))

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
    async def run_chain(self, seed: Seed) -> None:
        c = self.config
        root_id = seed_record_id(seed.index, seed.instruction, seed.input)
        root = Record(
            id=root_id, root_id=root_id, parent_id=None, epoch=0, op="seed",
            instruction=seed.instruction, input=seed.input, meta={"source": seed.source},
        )
        if c.seed_responses == "keep" and seed.output.strip():
            root.output, root.model = seed.output, "seed-file"
        else:
            result = await self._answer(root, 0)
            root.model = self.roles.responder.model
            if not result.ok:
                root.status, root.reason, root.evidence = "error", "call_failed", {"purpose": "answer", "error": result.error}
                self.store.save_step([root], seed.index, 0, root_id, "error")
                self._tick(root)
                return
            root.output = result.text
        self.store.save_step([root], seed.index, 0, root_id, "running")
        self._tick(root)

        current = root
        for epoch in range(1, c.epochs + 1):
            child = await self._evolve_once(current, epoch)
            state = "error" if child.status == "error" else ("done" if epoch == c.epochs else "running")
            if child.status == "kept":
                current = child
            self.store.save_step([child], seed.index, epoch, current.id, state)
            self._tick(child)
            if child.status == "error":
                # Stop this chain; its failed call is retried on the next run. The remaining epochs
                # are counted as not attempted.
                return

    async def _evolve_once(self, parent: Record, epoch: int) -> Record:
        c, t = self.config, self.templates
        op = choose_operation(self.weights, c.seed, parent.id, epoch)
        data_format = None
        if t.data_formats(op):
            data_format = choose_data_format(t.data_formats(op), c.seed, parent.id, epoch)
        given = join_input(parent.instruction, parent.input, c.input_separator)
        child_id = child_record_id(parent.id, epoch, op)
        child = Record(
            id=child_id, root_id=parent.root_id, parent_id=parent.id, epoch=epoch, op=op,
            instruction="", model=self.roles.evolver.model,
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

        request = Request(t.messages(t.render(op, given, data_format)), self._sampling(child_id, "evolve"))
        evolved = await self.roles.evolver("evolve", request, self._remaining(epoch, 2))
        if not evolved.ok:
            return fail("evolve", evolved)
        child.instruction = evolved.text.strip()

        # Cheap rules first: they need no further call and no later rule could save the child.
        verdict = check_instruction(child.instruction)
        if verdict:
            return eliminate(verdict.reason, verdict.evidence)

        if c.equality_check:
            judge_prompt = t.render_equality(given, child.instruction)
            judged = await self.roles.judge(
                "equality",
                Request([{"role": "user", "content": judge_prompt}], self._sampling(child_id, "equality", judge=True)),
                self._remaining(epoch, 1),
            )
            if not judged.ok:
                return fail("equality", judged)
            verdict, parsed = check_equality(judged.text)
            child.meta["equality_judge"] = judged.text.strip()[:80]
            if not parsed:
                self.progress.equality_unparsed += 1
                child.meta["equality_unparsed"] = True
            if verdict:
                return eliminate(verdict.reason, verdict.evidence)

        answered = await self._answer(child, epoch)
        if not answered.ok:
            return fail("answer", answered)
        child.output = answered.text
        verdict = check_response(child.output)
        if verdict:
            return eliminate(verdict.reason, verdict.evidence)
        return child

    # ---------------------------------------------------------------- all chains
    async def run(self, seeds: Iterable[Seed]) -> str | None:
        """Run every chain with at most `concurrency` in flight; seeds are pulled lazily.

        Returns the budget that stopped the run early ("max_calls" / "max_cost"), or None. On a stop,
        no new chain starts and the running ones end at their next call; every finished call is stored.
        """
        # More chains than request slots, so that slots stay full while chains wait on each other;
        # bounded, so that a 52K-seed file never becomes 52K tasks.
        limit = max(1, self.config.max_chains or 4 * self.config.concurrency)
        chain_slots = asyncio.Semaphore(limit)
        in_flight: set[asyncio.Task[None]] = set()
        stopped: str | None = None
        failure: BaseException | None = None
        drained = asyncio.Event()
        feeding = True  # while seeds are still being started, an empty in_flight is not the end

        def finished(task: asyncio.Task[None]) -> None:  # O(1) per chain, however many run
            nonlocal stopped, failure
            in_flight.discard(task)
            chain_slots.release()
            if task.cancelled():
                return
            exc = task.exception()
            if isinstance(exc, BudgetExhausted):
                stopped = stopped or str(exc)
            elif exc is not None and failure is None:
                failure = exc
            if failure or (not feeding and not in_flight):
                drained.set()

        try:
            for seed in seeds:
                await chain_slots.acquire()
                if stopped or failure:
                    break
                task = asyncio.create_task(self.run_chain(seed))
                in_flight.add(task)
                task.add_done_callback(finished)
                # Let the new chain send its first request now: without this, thousands of chains were
                # all set up before the first request left, and the server sat idle for ~0.8 s.
                await asyncio.sleep(0)
            feeding = False
            if in_flight and not failure:
                await drained.wait()
            if failure:
                raise failure  # a programming error: surface it
        finally:
            for task in list(in_flight):
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        return stopped
