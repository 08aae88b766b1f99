"""Wire an evolve run together: validate seeds, bind the run store, build backends, run, write outputs.

The data flow: seeds (seeds.py) -> executor (executor.py: many chains at once) -> chain (chain.py: one
lineage; every call through CachedLLM, calls.py, replayed from the store when stored) -> commit to the
run store (store.py) -> finalize (outputs.py: dataset.jsonl, eliminated.jsonl, errors.jsonl, stats.json).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..batches import BatchBackend, BatchCollector
from ..calls import Budget, CachedLLM, CallCounters, load_prices, price_of
from ..models.base import ModelSpec
from ..models.batchapi import build_batch_api
from ..models.registry import Backends
from ..records import Seed, file_digest
from ..rundir import write_stats
from ..seeds import SeedColumns, SeedReadStats, read_seeds
from ..slots import PrioritySlots
from ..store import RunStore
from .adaptive import PILOT_INCOMPLETE, AdaptiveWeights, pilot_seeds, shares, with_floor
from .chain import Chain, Progress, RoleCalls
from .config import EvolveConfig
from .estimate import Estimate, estimate_evolve, with_estimate
from .executor import Executor, shard_of
from .operations import parse_weights
from .outputs import finalize
from .tasks import chain_class, get_task
from .templates import load_templates

log = logging.getLogger(__name__)


def count_seeds(config: EvolveConfig) -> SeedReadStats:
    """Read the whole seed file once before anything is written: bad input fails with nothing half-done."""
    stats = SeedReadStats()
    for _ in read_seeds(config.source.seeds, _columns(config), config.source.limit, stats):
        pass
    return stats


def _columns(config: EvolveConfig) -> SeedColumns:
    return SeedColumns(instruction=config.source.column, input=config.source.input_column,
                       conversations=get_task(config.algorithm.task).conversations)


WAIT_POLL = 1.0  # seconds between looks at the backends' retry waits, for the progress line


async def report_waits(progress: Progress, roles: RoleCalls, on_step: Callable[[Progress], None],
                       backends: Backends | None = None) -> None:
    """While a call waits to retry (a long Retry-After, a backoff), no step finishes and the progress line
    would freeze: once a second, put the longest wait on `progress.waiting` and redraw. With several
    endpoints, `progress.endpoints` gets how many are up."""
    llms = (roles.evolver, roles.responder, roles.judge)
    while True:
        await asyncio.sleep(WAIT_POLL)
        waits = [w for llm in llms if (w := llm.waiting()) is not None]
        now = max(waits) if waits else None
        up = backends.endpoints_up() if backends is not None else None
        if now is not None or progress.waiting is not None or up != progress.endpoints:
            progress.waiting = now
            progress.endpoints = up
            on_step(progress)


async def _evolve_async(
    config: EvolveConfig, run_dir: Path, on_step: Callable[[Progress], None], on_start: Callable[[int, bool], None],
    command: str | None = None,
) -> dict[str, Any]:
    started = time.perf_counter()
    templates = load_templates(config.algorithm.template_set)
    task = get_task(config.algorithm.task)
    # The task's default weights apply to its own template set only (another set has other operations).
    weights = parse_weights(config.algorithm.op_weights or (task.op_weights if templates.name == task.templates else None),
                            templates)
    if config.algorithm.pilot is not None:  # a floor too high is refused before the run is bound to it
        with_floor(shares(weights), config.algorithm.op_floor)
    seed_stats = count_seeds(config)
    ex = config.executor
    expected = seed_stats.read
    if ex.shards > 1:  # a shard finishes when its own seeds are done
        expected = sum(1 for s in read_seeds(config.source.seeds, _columns(config), config.source.limit)
                       if shard_of(s, ex.shards) == ex.shard)
    plan = _estimate(config, run_dir)  # before the store is opened: what the run expects to send
    store = RunStore(run_dir)
    backends = Backends(config.transport)
    try:
        resumed = store.bind_config(config.bound(templates, file_digest(config.source.seeds)))
        # Not bound (a run may move to other endpoints), but kept: later commands reuse the run's own
        # models and endpoints, and its exact prompts even when the template file has moved.
        store.set_meta("roles", config.roles.to_dict())
        if command:  # the commands that made the run, for its dataset card (a resume adds only a new one)
            commands = store.get_meta("commands") or []
            store.set_meta("commands", commands if command in commands else [*commands, command])
        store.set_meta("template_set", templates.to_data())
        counters = CallCounters()
        prices = load_prices(config.budget.prices)
        budget = Budget(max_calls=config.budget.max_calls, max_cost=config.budget.max_cost, prices=prices)
        slots = PrioritySlots(config.transport.concurrency)
        collector = _batch_collector(config, store, budget) if config.batch is not None else None
        if collector is not None:
            slots = PrioritySlots(1 << 30)  # a round holds every waiting call; the provider paces them
        elif open_batches := store.batches(open_only=True):
            log.warning("%d provider batches of this run are still open: rerun with --batch %s to use their answers "
                        "(online, their requests are sent and paid again)", len(open_batches), open_batches[0]["provider"])

        def role(spec: ModelSpec) -> CachedLLM:
            if collector is not None:
                return CachedLLM(BatchBackend(collector, spec.backend, spec.model or ""), store, counters, budget, slots)
            return CachedLLM(backends.get(spec), store, counters, budget, slots)

        roles = RoleCalls(evolver=role(config.roles.evolver), responder=role(config.roles.answer),
                      judge=role(config.roles.equality))
        on_start(expected, resumed)
        executor = Executor(config.transport.concurrency, ex.max_chains, ex.shard, ex.shards)
        adaptive = None
        if config.algorithm.pilot is not None:  # the pilot: the first seeds this process runs (adaptive.py)
            pilot = pilot_seeds(executor.mine(read_seeds(config.source.seeds, _columns(config), config.source.limit)),
                                config.algorithm.pilot)
            adaptive = AdaptiveWeights(weights, pilot, config.algorithm.op_floor)
        chain = (chain_class(task) or Chain)(config, templates, weights, roles,
                                              commit=adaptive.commit(store.save_step) if adaptive else store.save_step,
                                              on_step=on_step, rules=task.rules(config),
                                              weights_for=adaptive.for_seed if adaptive else None)
        run_chain = chain.run
        seeds = read_seeds(config.source.seeds, _columns(config), config.source.limit)
        if collector is not None:  # every chain in progress at once: a round gathers all their calls
            executor = Executor(config.transport.concurrency, 1 << 30, ex.shard, ex.shards)
            chain.speculative = True
            seeds, run_chain = collector.seeds(seeds), _batched(collector, chain.run)
        if adaptive:  # outside the batch wrapper: a chain held at the pilot's barrier is not yet in a round
            run_chain = adaptive.gate(run_chain)
        waits = asyncio.create_task(report_waits(chain.progress, roles, on_step, backends))
        try:
            if collector is not None:
                await collector.recover()  # batches a killed run left: polled again, never submitted twice
            # A FatalBackendError (a refused key, an unknown model, nothing listening) propagates from here:
            # the executor cancels the chains in flight, and every call and step finished so far is stored.
            stopped_by = await executor.run(seeds, run_chain)
            stopped_by = stopped_by or budget.stopped_by
            if adaptive and adaptive.skipped and not stopped_by:
                stopped_by = PILOT_INCOMPLETE  # a pilot call failed: the other seeds wait for the rerun
        finally:
            waits.cancel()
            if collector is not None:
                await collector.aclose()
            elapsed = time.perf_counter() - started
            total_seconds = (store.get_meta("seconds_total") or 0.0) + elapsed
            store.set_meta("seconds_total", total_seconds)
        extra = {
            "llm_calls": sum(counters.sent.values()),
            "cache_hits": sum(counters.cache_hits.values()),
            "failed_calls": sum(counters.failed.values()),
            "calls_by_purpose": counters.as_dict(),
            "equality_unparsed": chain.progress.equality_unparsed,
            "skipped_empty_seeds": seed_stats.skipped_empty,
            "resumed": resumed,
            "seconds": round(elapsed, 3),
            "seconds_total": round(total_seconds, 3),
            "models": {
                "evolver": roles.evolver.model,
                "responder": roles.responder.model,
                "judge": roles.judge.model,
            },
            "templates": templates.name,
            "stopped_by": stopped_by,
            "http": backends.counters(),
        }
        if collector is not None:
            extra["batch"] = {**collector.stats.as_dict(), "provider": config.batch.provider,
                              "rounds_total": store.get_meta("batch_rounds") or 0,
                              "wasted": chain.progress.wasted}
        if adaptive:
            extra["op_weights"] = adaptive.stats()
        if endpoint_stats := backends.endpoint_stats():  # several endpoints: each one's share of this run
            extra["endpoints"] = endpoint_stats
        if prices:
            extra["cost"] = _cost(store, prices, budget, counters)
        stats = finalize(store, config.algorithm.epochs, extra, task.tally() if task.tally else None)
        if not stopped_by and stats["seeds"] != expected:
            # Never report a run as finished when a seed went missing.
            raise RuntimeError(f"internal error: {expected} seeds read but {stats['seeds']} processed")
        if plan is not None:
            stats = with_estimate(stats, plan)
        write_stats(run_dir, stats)
        return stats
    finally:
        await backends.aclose()
        store.close()


def _batch_collector(config: EvolveConfig, store: RunStore, budget: Budget) -> BatchCollector:
    """The round collector of --batch: one provider endpoint serves every role."""
    assert config.batch is not None
    specs = [config.roles.evolver, config.roles.answer, config.roles.equality]
    if any(not spec.model for spec in specs):
        raise ValueError("--batch needs a served model for every role (--model, and --answer-model/--judge-model if given)")
    if len({(spec.base_url, spec.api_key_env) for spec in specs}) > 1:
        raise ValueError("--batch sends every role's calls to one endpoint: give the roles the same --base-url")
    api = build_batch_api(config.batch.provider, config.roles.evolver, config.transport)
    return BatchCollector(api, store, poll=config.batch.poll, max_requests=config.batch.max_requests,
                          max_retries=config.transport.max_retries, budget=budget, on_event=lambda m: log.info("%s", m))


def _batched(collector: BatchCollector, run: Callable[[Seed], Awaitable[None]]) -> Callable[[Seed], Awaitable[None]]:
    async def run_chain(seed: Seed) -> None:
        with collector.chain(seed.index):
            await run(seed)
    return run_chain


def _cost(store: RunStore, prices: dict[str, dict[str, float]], budget: Budget, counters: CallCounters) -> dict[str, Any]:
    """stats.json's cost: this run's and the run's total, the total split by mode (online, batch) and purpose."""
    split: dict[str, dict[str, float]] = {}
    for (model, mode, purpose), (p, c) in sorted(store.tokens_by_mode().items()):
        usd = price_of(prices, model, p, c, mode)
        split.setdefault(mode, {}).setdefault(purpose, 0.0)
        split[mode][purpose] += usd
    this_run: dict[str, dict[str, float]] = {}
    for (mode, purpose), usd in sorted(counters.cost.items()):
        this_run.setdefault(mode, {})[purpose] = round(usd, 6)
    return {
        "this_run": round(budget.cost, 6),
        "total": round(sum(sum(v.values()) for v in split.values()), 6),
        "currency": "USD",
        "by_mode": {mode: round(sum(v.values()), 6) for mode, v in split.items()},
        "by_mode_purpose": {mode: {k: round(u, 6) for k, u in v.items()} for mode, v in split.items()},
        "this_run_by_mode_purpose": this_run,
    }


def _estimate(config: EvolveConfig, run_dir: Path) -> Estimate | None:
    """The run's estimate, kept in stats.json next to the actual numbers. A plan, not a part of the run: if it
    cannot be made (an odd template set, say), the run goes on without it."""
    try:
        return estimate_evolve(config, run_dir)
    except Exception as exc:  # noqa: BLE001 - an estimate never stops a run
        log.warning("no estimate for this run: %s", exc)
        return None


# Young-generation threshold while a run is in flight. With a thousand requests in flight, CPython's
# default thresholds (700, 10, 10) ran ~30 collections a second, the oldest generation's up to 180 ms
# each: 3.2 s of pauses in a 31 s run at C=1024, 0.05 s with these (measured with gc.callbacks). Almost
# everything a call allocates is freed by reference counting; cycles are still collected, less often.
RUN_GC_THRESHOLD = (50_000, 20, 100)


@contextmanager
def throughput_gc() -> Iterator[None]:
    """Freeze what startup allocated (never garbage) and collect young objects rarely; restore after."""
    before = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(*RUN_GC_THRESHOLD)
    try:
        yield
    finally:
        gc.set_threshold(*before)
        gc.unfreeze()


def run_evolve(
    config: EvolveConfig,
    run_dir: str | Path,
    on_step: Callable[[Progress], None] | None = None,
    on_start: Callable[[int, bool], None] | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run (or resume) an evolve run into `run_dir`; returns its stats. `command`: the command line that asked
    for it, kept with the run for its dataset card."""
    with throughput_gc():
        return asyncio.run(
            _evolve_async(config, Path(run_dir), on_step or (lambda _p: None), on_start or (lambda _n, _r: None), command)
        )
