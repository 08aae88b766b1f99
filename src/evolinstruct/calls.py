"""Every LLM call goes through `CachedLLM`: run-store replay first, then the backend.

Identical requests in flight at the same time share one call. Counters split calls, cache hits,
failures and tokens by purpose (evolve, answer, equality, ...), for stats.json. Budgets (--max-calls,
--max-cost) and price tables live here too: they are about calls.

What is stored: only successes with text. An empty completion, from any backend (an HTTP server's null
content, or a local model that stopped at once, which the embedded model rarely does), is an error
`Result` ("empty completion ..."): stored as a failure, never as an answer, and retried by the next run.
A `FatalBackendError` from the backend propagates as is and stores nothing for that call.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .models.base import Backend, Request, Result
from .redact import redact
from .slots import PrioritySlots
from .store import RunStore, key_of, request_json


@dataclass(slots=True)
class CallCounters:
    sent: Counter = field(default_factory=Counter)
    cache_hits: Counter = field(default_factory=Counter)
    failed: Counter = field(default_factory=Counter)
    prompt_tokens: Counter = field(default_factory=Counter)
    completion_tokens: Counter = field(default_factory=Counter)
    cost: Counter = field(default_factory=Counter)  # USD by (mode, purpose), when prices are known

    def as_dict(self) -> dict[str, dict[str, int]]:
        return {
            "sent": dict(self.sent),
            "cache_hits": dict(self.cache_hits),
            "failed": dict(self.failed),
            "prompt_tokens": dict(self.prompt_tokens),
            "completion_tokens": dict(self.completion_tokens),
        }


class BudgetExhausted(Exception):
    """--max-calls or --max-cost reached: the run stops cleanly and can be resumed."""


@dataclass(slots=True)
class Budget:
    max_calls: int | None = None
    max_cost: float | None = None
    prices: dict[str, dict[str, float]] = field(default_factory=dict)  # model -> USD per 1M input/output tokens
    calls: int = 0
    cost: float = 0.0
    stopped_by: str | None = None

    def check(self) -> None:
        if self.max_calls is not None and self.calls >= self.max_calls:
            self.stopped_by = "max_calls"
        elif self.max_cost is not None and self.cost >= self.max_cost:
            self.stopped_by = "max_cost"
        if self.stopped_by:
            raise BudgetExhausted(self.stopped_by)


BATCH_DISCOUNT = 0.5  # batch APIs (OpenAI, Anthropic) bill half the online price


def mode_price(price: dict, mode: str = "online") -> dict[str, float]:
    """A model's prices in a mode. Batch: the entry's "batch" prices ({"input", "output"}), or "batch" as a
    factor of the online prices (0.5), else BATCH_DISCOUNT of the online prices."""
    if mode != "batch":
        return price
    batch = price.get("batch")
    if isinstance(batch, dict):
        return batch
    factor = float(batch) if isinstance(batch, int | float) else BATCH_DISCOUNT
    return {k: factor * float(price.get(k, 0.0)) for k in ("input", "output")}


def price_of(prices: dict[str, dict[str, float]], model: str, prompt_tokens: int, completion_tokens: int,
             mode: str = "online") -> float:
    price = prices.get(model) or prices.get("*")
    if not price:
        return 0.0
    price = mode_price(price, mode)
    return (prompt_tokens * price.get("input", 0.0) + completion_tokens * price.get("output", 0.0)) / 1e6


def load_prices(path: str | None) -> dict[str, dict[str, float]]:
    """A JSON price table: {"MODEL or *": {"input": USD per 1M tokens, "output": USD per 1M tokens}}, each entry
    optionally with "batch": {"input": ..., "output": ...} or "batch": 0.5 (a factor of the online prices)."""
    if not path:
        return {}
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}:0: no such price table") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}:{exc.lineno}: malformed JSON: {exc.msg}") from None
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f'{path}:1: expected {{"model": {{"input": 0.15, "output": 0.6}}}} (USD per 1M tokens)')
    return data


class CachedLLM:
    def __init__(
        self,
        backend: Backend,
        store: RunStore,
        counters: CallCounters,
        budget: Budget | None = None,
        slots: PrioritySlots | None = None,
    ) -> None:
        self.backend = backend
        self.store = store
        self.counters = counters
        self.budget = budget or Budget()
        # Requests in flight across every role share these slots (--concurrency); cache hits need none.
        self.slots = slots or PrioritySlots(1 << 30)
        self._in_flight: dict[str, asyncio.Future[Result]] = {}

    @property
    def model(self) -> str:
        return self.backend.model

    def waiting(self) -> tuple[float, str] | None:
        """The backend's longest retry wait in progress, (seconds, why), when it reports one."""
        waiting = getattr(self.backend, "waiting", None)
        return waiting() if waiting is not None else None

    async def __call__(self, purpose: str, request: Request, remaining: int = 0) -> Result:
        """One call. `remaining`: calls the caller's chain has left after this one (slot priority)."""
        canonical = request_json(self.backend.model, request)
        key = key_of(canonical)
        hit = self.store.cached(key)
        if hit is not None and hit.text:  # an empty answer stored by an older version is asked again
            self.counters.cache_hits[purpose] += 1
            return hit
        pending = self._in_flight.get(key)
        if pending is not None:
            self.counters.cache_hits[purpose] += 1
            return await asyncio.shield(pending)
        self.budget.check()
        self.budget.calls += 1  # reserve before awaiting, so concurrent chains cannot overshoot
        future: asyncio.Future[Result] = asyncio.get_running_loop().create_future()
        self._in_flight[key] = future
        try:
            # A batching backend (--batch) takes the call with its key and purpose: it records them in the
            # store before submitting and answers when the provider's batch has ended.
            enqueue = getattr(self.backend, "enqueue", None)
            async with self.slots.slot(remaining):
                if enqueue is not None:
                    result = await enqueue(key, purpose, canonical, request)
                else:
                    result = (await self.backend.generate([request]))[0]
            if result.ok and not result.text:
                result = Result(error=f"empty completion from {self.backend.model} (finish_reason "
                                      f"{result.finish_reason!r}): not stored, retried by the next run",
                                prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens,
                                finish_reason=result.finish_reason)
            if result.ok:
                mode = getattr(self.backend, "mode", "online")
                cost = price_of(self.budget.prices, self.backend.model, result.prompt_tokens, result.completion_tokens, mode)
                self.budget.cost += cost
                if cost:
                    self.counters.cost[(mode, purpose)] += cost
                self.store.save_call(key, purpose, self.backend.model, canonical, result)
                self.counters.sent[purpose] += 1
                self.counters.prompt_tokens[purpose] += result.prompt_tokens
                self.counters.completion_tokens[purpose] += result.completion_tokens
            else:
                result.error = redact(result.error or "unknown error")  # backends mask their own key; this catches key shapes
                self.store.save_failure(key, purpose, self.backend.model, result.error)
                self.counters.failed[purpose] += 1
            future.set_result(result)
            return result
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: waiters re-raise it themselves
            raise
        finally:
            self._in_flight.pop(key, None)
