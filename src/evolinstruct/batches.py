"""Provider batch rounds (--batch): the same chains, their calls answered by OpenAI's or Anthropic's batch API.

Chains do not change: each awaits its calls through `CachedLLM`, whose backend here is a `BatchBackend`.
Its `enqueue` puts the request in the collector's queue and waits. When every chain in progress is waiting
(a chain that awaits its judge and its speculative answer waits on both), the collector submits a round:
every queued request, one batch per model (split by the provider's limits, `--batch-max-requests` and
size), polls each batch every `--batch-poll` seconds, stores the answers and wakes the chains, which run to
their next calls, and so on. A timer (SETTLE_IDLE) also submits when nothing moved for a while, so a chain
that awaits something else (a sandbox, another chain's identical call) never stalls a round.

Crash safety, in the run store (store.py, tables batches and batch_requests):
  - before a batch is submitted, its requests are recorded as pending (state "preparing");
  - after the upload, the file id ("uploaded"); after creation, the provider's batch id ("submitted");
  - results are stored as calls (the call cache) before the batch is marked "ended".
A rerun of the same command first recovers: a submitted batch is polled again; an uploaded one is looked up
at the provider (it may have been created just before the kill) and polled if found; a preparing one was
never created. A chain that asks for a request of a recovered batch waits for that batch; nothing is paid
twice. An expired, cancelled or failed batch, and per-line errors worth retrying, put back only the
requests without an answer, in the next round, up to --max-retries times each.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import secrets
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from .calls import Budget, BudgetExhausted, price_of
from .models.base import FatalBackendError, Request, Result
from .models.batchapi import BatchAPI, BatchTooLarge, LineResult, TransientBatchError
from .store import RunStore

log = logging.getLogger(__name__)

SETTLE_TICKS = 3  # loop turns with nothing new before a round is submitted (gathered calls enqueue a turn apart)
SETTLE_IDLE = 2.0  # seconds with requests queued and nothing moving: submit anyway
TRANSIENT_BACKOFF = (1.0, 30.0)  # first and longest wait after a transient error of the batch API

# The chain a request belongs to: set by `BatchCollector.chain()` in the chain's task, inherited by the
# tasks it gathers, so the collector knows when every chain waits.
CHAIN: contextvars.ContextVar[object | None] = contextvars.ContextVar("evolinstruct_chain", default=None)


@dataclass(slots=True)
class _Call:
    key: str
    purpose: str
    model: str
    canonical: str
    request: Request | None  # None for a recovered request no chain has asked for yet
    futures: list[asyncio.Future[Result]] = field(default_factory=list)
    chains: list[object] = field(default_factory=list)
    attempts: int = 0


@dataclass(slots=True)
class BatchStats:
    rounds: int = 0
    batches: int = 0
    submitted: Counter = field(default_factory=Counter)  # requests submitted, by purpose
    resubmitted: int = 0
    recovered: int = 0  # batches found in the store and polled again
    splits: int = 0
    idle_rounds: int = 0  # rounds submitted by the idle timer, not because every chain waited

    def as_dict(self) -> dict[str, Any]:
        return {"idle_rounds": self.idle_rounds, "rounds": self.rounds, "batches": self.batches, "requests_submitted": sum(self.submitted.values()),
                "submitted_by_purpose": dict(self.submitted), "resubmitted": self.resubmitted,
                "recovered_batches": self.recovered, "splits": self.splits}


class BatchBackend:
    """One model's calls, answered in provider batches. `mode` tells CachedLLM which prices apply."""

    mode = "batch"

    def __init__(self, collector: BatchCollector, name: str, model: str) -> None:
        self.collector, self.name, self.model = collector, name, model

    async def enqueue(self, key: str, purpose: str, canonical: str, request: Request) -> Result:
        return await self.collector.enqueue(key, purpose, self.model, canonical, request)

    def waiting(self) -> tuple[float, str] | None:
        """For the progress line: how long the requests at the provider have waited, and how many there are."""
        return self.collector.waiting_note()

    async def generate(self, requests: list[Request]) -> list[Result]:
        raise RuntimeError("a batch backend takes calls through enqueue (CachedLLM), with their store keys")

    async def aclose(self) -> None:
        return None


class BatchCollector:
    def __init__(
        self,
        api: BatchAPI,
        store: RunStore,
        *,
        poll: float = 60.0,
        max_requests: int | None = None,
        max_retries: int = 6,
        budget: Budget | None = None,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        self.api, self.store = api, store
        self.poll = poll
        self.max_requests = min(max_requests or api.max_requests, api.max_requests)
        self.max_retries = max_retries
        self.budget = budget or Budget()
        self.on_event = on_event or (lambda _m: None)
        self.stats = BatchStats()
        self.queue: dict[str, _Call] = {}  # waiting for the next round
        self.live: dict[str, _Call] = {}  # in a submitted batch
        self.waiting: Counter = Counter()  # chain -> its requests not yet answered
        self.active = 0  # chains in progress
        self.feeding = True  # seeds are still being started
        self._moved = 0  # bumped on every enqueue and answer: a round waits until it stops
        self._last_move = time.monotonic()
        self._settler: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._round = int(store.get_meta("batch_rounds") or 0)
        self._submitted_at = time.monotonic()

    def waiting_note(self) -> tuple[float, str] | None:
        if not self.live:
            return None
        return time.monotonic() - self._submitted_at, f"batch round {self._round}: {len(self.live)} requests at the provider"

    # ---------------------------------------------------------------- chains
    @contextlib.contextmanager
    def chain(self, token: object) -> Iterator[None]:
        """Around one chain's run: counts it as active and tags its requests."""
        self.active += 1
        reset = CHAIN.set(token)
        try:
            yield
        finally:
            CHAIN.reset(reset)
            self.active -= 1
            self._poke()

    def seeds(self, seeds: Iterable[Any]) -> Iterator[Any]:
        """The seeds, passed through; when they run out, no more chains will start."""
        yield from seeds
        self.feeding = False
        self._poke()

    # ---------------------------------------------------------------- requests
    async def enqueue(self, key: str, purpose: str, model: str, canonical: str, request: Request) -> Result:
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        chain = CHAIN.get()
        call = self.live.get(key) or self.queue.get(key)
        if call is None:
            call = self.queue[key] = _Call(key, purpose, model, canonical, request)
        call.request = call.request or request
        call.futures.append(future)
        call.chains.append(chain)
        self.waiting[chain] += 1
        self._poke()
        return await future

    def _answer(self, call: _Call, result: Result | BaseException) -> None:
        for future in call.futures:
            if not future.done():
                if isinstance(result, BaseException):
                    future.set_exception(result)
                else:
                    future.set_result(result)
        for chain in call.chains:
            self.waiting[chain] -= 1
            if self.waiting[chain] <= 0:
                del self.waiting[chain]
        call.futures.clear()
        call.chains.clear()
        self._poke()

    # ---------------------------------------------------------------- rounds
    def _poke(self) -> None:
        self._moved += 1
        self._last_move = time.monotonic()
        if self.queue and (self._settler is None or self._settler.done()):
            self._settler = asyncio.get_running_loop().create_task(self._settle())

    def _all_waiting(self) -> bool:
        return not self.feeding and self.active > 0 and len(self.waiting) >= self.active

    async def _settle(self) -> None:
        """Submit a round once every chain waits (or nothing moved for SETTLE_IDLE seconds)."""
        while self.queue:
            seen = self._moved
            for _ in range(SETTLE_TICKS):
                await asyncio.sleep(0)
            if seen != self._moved:
                continue
            if self._all_waiting():
                self._submit_round()
                return
            if time.monotonic() - self._last_move >= SETTLE_IDLE:
                self.stats.idle_rounds += 1  # a chain waited on something else (a sandbox, a shared call)
                self._submit_round()
                return
            await asyncio.sleep(0.05)

    def _submit_round(self) -> None:
        calls = list(self.queue.values())
        self.queue.clear()
        if not calls:
            return
        worst = sum(self._worst_cost(c) for c in calls)
        if self.budget.max_cost is not None and self.budget.cost + worst > self.budget.max_cost:
            self.budget.stopped_by = "max_cost"
            self.on_event(f"--max-cost: a round of {len(calls)} requests could cost up to ${worst:.4f}, "
                          f"over the budget left (${self.budget.max_cost - self.budget.cost:.4f}); not submitted")
            for call in calls:
                self._answer(call, BudgetExhausted("max_cost"))
            return
        self.budget.cost += worst  # reserved until the round's answers are priced
        self._submitted_at = time.monotonic()
        self._round += 1
        self.stats.rounds += 1
        self.store.set_meta("batch_rounds", self._round)
        by_model: dict[str, list[_Call]] = {}
        for call in calls:
            by_model.setdefault(call.model, []).append(call)
        for model, group in sorted(by_model.items()):
            for part in self._parts(group):
                self._spawn(self._run_batch(model, part, self._round, worst_share=sum(self._worst_cost(c) for c in part)))

    def _parts(self, calls: list[_Call]) -> Iterator[list[_Call]]:
        """Calls in batches within the request and size limits."""
        part: list[_Call] = []
        size = 0
        for call in calls:
            n = len(call.canonical) + 256
            if part and (len(part) >= self.max_requests or size + n > self.api.max_bytes):
                yield part
                part, size = [], 0
            part.append(call)
            size += n
        if part:
            yield part

    def _worst_cost(self, call: _Call) -> float:
        """A call's cost if its answer used every max token: the prompt estimated at a token per 3 characters."""
        if not self.budget.prices or call.request is None:
            return 0.0
        chars = sum(len(m.get("content") or "") for m in call.request.messages)
        return price_of(self.budget.prices, call.model, chars // 3 + 1, call.request.sampling.max_tokens, "batch")

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:  # a fatal error (a refused key): every waiting chain gets it, and the run stops
            for call in [*self.live.values(), *self.queue.values()]:
                self._answer(call, exc)

    # ---------------------------------------------------------------- one batch
    async def _run_batch(self, model: str, calls: list[_Call], round_no: int, worst_share: float = 0.0) -> None:
        uid = secrets.token_hex(8)
        for call in calls:
            self.live[call.key] = call
        rows = [(c.key, c.purpose, c.model, c.canonical) for c in calls]
        self.store.batch_prepare(uid, self.api.provider, model, round_no, rows)
        lines = [self.api.line(c.key, model, c.request) for c in calls if c.request is not None]
        self.stats.batches += 1
        for call in calls:
            self.stats.submitted[call.purpose] += 1
        self.on_event(f"round {round_no}: submitting {len(calls)} {model} requests")
        try:
            batch_id = await self._submit(uid, lines)
        except BatchTooLarge as exc:  # the halves keep their shares of the round's reservation
            await self._split(uid, model, calls, round_no, str(exc))
            return
        self.store.batch_update(uid, state="submitted", batch_id=batch_id)
        await self._follow(uid, batch_id, model, {c.key: c for c in calls}, round_no, worst_share)

    async def _split(self, uid: str, model: str, calls: list[_Call], round_no: int, why: str) -> None:
        """A batch over a provider limit: record it abandoned and submit it in two halves."""
        self.store.batch_update(uid, state="abandoned", status=f"split: {why}"[:300])
        self.store.batch_requests_done(uid, {c.key: "missing" for c in calls})
        if len(calls) <= 1:
            for call in calls:
                self._finish(call, Result(error=f"the provider refused a batch of one request: {why}"))
            return
        self.stats.splits += 1
        self.max_requests = max(1, min(self.max_requests, len(calls) // 2))
        self.on_event(f"batch over a provider limit ({why}); submitting it in halves")
        half = len(calls) // 2
        for part in (calls[:half], calls[half:]):
            self._spawn(self._run_batch(model, part, round_no, sum(self._worst_cost(c) for c in part)))

    async def _follow(self, uid: str, batch_id: str, model: str, calls: dict[str, _Call], round_no: int,
                      worst_share: float = 0.0) -> None:
        """Poll a submitted batch to its end, store its answers, wake the chains, requeue what is missing."""
        while True:
            status = await self._retrying("poll", lambda: self.api.poll(batch_id))
            self.store.batch_update(uid, status=status.status, counts=status.counts)
            if status.state != "running":
                break
            await asyncio.sleep(self.poll)
        if status.state == "failed":
            if status.too_large:  # the halves keep their shares of the round's reservation
                for call in calls.values():
                    self.live.pop(call.key, None)
                await self._split(uid, model, list(calls.values()), round_no, status.error)
                return
            self.on_event(f"batch {batch_id} failed ({status.error}); its requests go in the next round")
            results: dict[str, LineResult] = {}
        else:
            results = await self._retrying("download", lambda: self.api.results(batch_id))
        self.budget.cost -= worst_share  # the reservation ends; CachedLLM prices the answers as they arrive
        states: dict[str, str] = {}
        for key, call in calls.items():
            line = results.get(key)
            if line is not None and line.result.ok:
                self.store.save_call(key, call.purpose, call.model, call.canonical, line.result)
                states[key] = "done"
            elif line is not None and not line.retryable:
                states[key] = "error"
            else:
                states[key] = "missing"
        self.store.batch_requests_done(uid, states)
        self.store.batch_update(uid, state="ended")
        for key, call in calls.items():
            self.live.pop(key, None)
            line = results.get(key)
            if states[key] == "done":
                self._finish(call, line.result)
            elif states[key] == "error":
                self._finish(call, line.result)
            elif call.futures:  # missing: asked again in the next round, within the retry budget
                call.attempts += 1
                why = line.result.error if line is not None else f"no result (batch {status.status})"
                if call.attempts > self.max_retries:
                    self._finish(call, Result(error=f"{why} (after {call.attempts} batches)"))
                else:
                    self.stats.resubmitted += 1
                    self.queue[key] = call
        self._poke()

    def _finish(self, call: _Call, result: Result) -> None:
        self.live.pop(call.key, None)
        self._answer(call, result)

    def _taken(self) -> frozenset[str]:
        """Provider ids the run has recorded: a batch looked up (BatchAPI.find) is never one of them."""
        return frozenset(b["batch_id"] for b in self.store.batches() if b["batch_id"])

    async def _submit(self, uid: str, lines: list[dict[str, Any]]) -> str:
        """Submit a batch, retried with backoff on transient errors. Once the batch may exist (after the upload),
        a failed create may still have made it (its answer lost to a timeout or a reset): it is looked up before
        another is created, so its requests are never paid twice."""
        started = time.time()
        uploaded: list[str] = []

        def on_uploaded(file_id: str) -> None:
            uploaded.append(file_id)
            self.store.batch_update(uid, state="uploaded", file_id=file_id)

        async def made() -> str | None:
            if not uploaded:
                return None
            return await self._retrying("find", lambda: self.api.find(
                uid, uploaded[-1] or None, started, len(lines), self._taken()))

        return await self._retrying("submit", lambda: self.api.submit(uid, lines, on_uploaded), made)

    async def _retrying(self, what: str, make: Callable[[], Any],
                        done: Callable[[], Awaitable[Any]] | None = None) -> Any:
        """A batch API call, retried with backoff on transient errors (the batch itself is safe in the store).
        `done()`: after a transient error, the call's result if it took effect anyway (else None: retry)."""
        delay, longest = TRANSIENT_BACKOFF
        for attempt in range(self.max_retries + 1):
            try:
                return await make()
            except TransientBatchError as exc:
                if done is not None and (result := await done()) is not None:
                    log.warning("batch %s failed (%s), but it took effect: %s", what, exc, result)
                    return result
                if attempt == self.max_retries:
                    raise FatalBackendError(f"the batch API keeps failing ({what}: {exc}); every batch is recorded "
                                            "in the run store: rerun the same command to resume") from None
                log.warning("batch %s failed (%s); retrying in %.0fs", what, exc, delay)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
        raise AssertionError("unreachable")

    # ---------------------------------------------------------------- resume
    async def recover(self) -> int:
        """Batches a killed run left open: poll the submitted ones (and the created-but-unrecorded ones the
        provider knows), abandon those never created. Returns how many are polled again."""
        followed = 0
        # Provider ids the run has recorded: a batch looked up after a kill is never one of them (nor one found
        # for another batch here), or two batches would follow one and the other's requests be paid twice.
        taken = set(self._taken())
        for batch in self.store.batches(open_only=True):
            uid, batch_id = batch["id"], batch["batch_id"]
            if batch["state"] == "uploaded" and not batch_id:
                batch_id = await self._retrying(
                    "find", lambda b=batch: self.api.find(b["id"], b["file_id"], b["created"], b["requests"],
                                                          frozenset(taken)))
                if batch_id:
                    taken.add(batch_id)
                    self.store.batch_update(uid, state="submitted", batch_id=batch_id)
            if not batch_id:
                self.store.batch_update(uid, state="abandoned", status="never created")
                self.store.batch_requests_done(uid, {k: "missing" for k, *_ in self.store.batch_pending(uid)})
                continue
            calls = {}
            for key, purpose, model, canonical in self.store.batch_pending(uid):
                call = _Call(key, purpose, model, canonical, None)
                calls[key] = self.live[key] = call
            followed += 1
            self.stats.recovered += 1
            self.on_event(f"resuming batch {batch_id} ({len(calls)} requests pending)")
            self._spawn(self._follow(uid, batch_id, batch["model"], calls, batch["round"]))
        return followed

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        if self._settler is not None:
            self._settler.cancel()
        await asyncio.gather(*self._tasks, *([self._settler] if self._settler else []), return_exceptions=True)
        await self.api.aclose()


def run_status(store: RunStore, prices: dict[str, dict[str, float]] | None = None) -> dict[str, Any]:
    """What `evolinstruct status` shows: open batches (their last polled provider status and counts), batch
    rounds done, calls stored and failed, records by status, and the cost so far when prices are given."""
    batches = store.batches()
    open_batches = [b for b in batches if b["state"] in ("preparing", "uploaded", "submitted")]
    totals = store.call_totals()
    records: Counter = Counter()
    for (status, n) in store.db.execute("SELECT status, COUNT(*) FROM records GROUP BY status"):
        records[status] = n
    out: dict[str, Any] = {
        "batches_open": open_batches,
        "batches": {state: sum(1 for b in batches if b["state"] == state) for state in sorted({b["state"] for b in batches})},
        "rounds": store.get_meta("batch_rounds") or 0,
        "calls": sum(v["calls"] for v in totals.values()),
        "calls_by_purpose": {k: v["calls"] for k, v in sorted(totals.items())},
        "failed_calls": len(store.failures()),
        "records": dict(records),
    }
    if prices:
        by_mode: Counter = Counter()
        for (model, mode, _purpose), (p, c) in store.tokens_by_mode().items():
            by_mode[mode] += price_of(prices, model, p, c, mode)
        out["cost"] = {"total": round(sum(by_mode.values()), 6), **{m: round(v, 6) for m, v in sorted(by_mode.items())}}
    return out
