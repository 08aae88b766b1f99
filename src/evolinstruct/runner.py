"""Wire a run together: validate seeds, bind the run store, build backends, run, write outputs."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from .backends.base import Backend, make_backend
from .config import EvolveConfig, ModelSpec, file_digest
from .llm import Budget, CachedLLM, CallCounters, price_of
from .operations import parse_weights
from .outputs import STATS, finalize, write_json
from .pipeline import Evolver, Progress, Roles
from .seeds import SeedColumns, SeedReadStats, read_seeds
from .slots import PrioritySlots
from .store import RunStore
from .templates import load_templates

log = logging.getLogger(__name__)


def count_seeds(config: EvolveConfig) -> SeedReadStats:
    """Read the whole seed file once before anything is written: bad input fails with nothing half-done."""
    stats = SeedReadStats()
    for _ in read_seeds(config.seeds, _columns(config), config.limit, stats):
        pass
    return stats


def _columns(config: EvolveConfig) -> SeedColumns:
    return SeedColumns(instruction=config.column, input=config.input_column)


def _build(spec: ModelSpec, config: EvolveConfig, cache: dict[tuple, Backend]) -> Backend:
    key = (spec.backend, spec.model, spec.base_url, spec.api_key_env)
    if key not in cache:
        options: dict[str, Any] = {}
        if spec.backend == "openai":
            options = {
                "base_url": spec.base_url, "api_key_env": spec.api_key_env, "concurrency": config.concurrency,
                "rpm": config.rpm, "tpm": config.tpm, "timeout": config.request_timeout,
                "max_retries": config.max_retries, "http_client": config.http_client,
            }
        elif spec.backend == "local":
            options = {"max_batch": min(config.concurrency, 64)}
        elif spec.backend == "vllm":
            options = {"max_batch": config.concurrency}
        cache[key] = make_backend(spec.backend, spec.model, **options)
    return cache[key]


async def _run_async(
    config: EvolveConfig, run_dir: Path, on_step: Callable[[Progress], None], on_start: Callable[[int, bool], None]
) -> dict[str, Any]:
    started = time.perf_counter()
    templates = load_templates(config.templates)
    weights = parse_weights(config.op_weights, templates)
    seed_stats = count_seeds(config)
    store = RunStore(run_dir)
    backends: dict[tuple, Backend] = {}
    try:
        resumed = store.bind_config(config.result_relevant(templates, file_digest(config.seeds)))
        counters = CallCounters()
        prices = load_prices(config.prices)
        budget = Budget(max_calls=config.max_calls, max_cost=config.max_cost, prices=prices)
        slots = PrioritySlots(config.concurrency)

        def role(spec: ModelSpec) -> CachedLLM:
            return CachedLLM(_build(spec, config, backends), store, counters, budget, slots)

        roles = Roles(
            evolver=role(config.evolver),
            responder=role(config.responder or config.evolver),
            judge=role(config.judge or config.evolver),
        )
        on_start(seed_stats.read, resumed)
        evolver = Evolver(config, templates, weights, roles, store, on_step=on_step)
        try:
            stopped_by = await evolver.run(read_seeds(config.seeds, _columns(config), config.limit))
        finally:
            elapsed = time.perf_counter() - started
            total_seconds = (store.get_meta("seconds_total") or 0.0) + elapsed
            store.set_meta("seconds_total", total_seconds)
        extra = {
            "llm_calls": sum(counters.sent.values()),
            "cache_hits": sum(counters.cache_hits.values()),
            "failed_calls": sum(counters.failed.values()),
            "calls_by_purpose": counters.as_dict(),
            "equality_unparsed": evolver.progress.equality_unparsed,
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
            "http": {name: dict(getattr(b, "counters", {})) for name, b in _labelled(backends).items()},
        }
        if prices:
            by_model = store.tokens_by_model()
            extra["cost"] = {
                "this_run": round(budget.cost, 6),
                "total": round(sum(price_of(prices, m, p, c) for m, (p, c) in by_model.items()), 6),
                "currency": "USD",
            }
        stats = finalize(store, config.epochs, extra)
        if not stopped_by and stats["seeds"] != seed_stats.read:
            # Never report a run as finished when a seed went missing.
            raise RuntimeError(f"internal error: {seed_stats.read} seeds read but {stats['seeds']} processed")
        write_json(run_dir / STATS, stats)
        return stats
    finally:
        for backend in backends.values():
            await backend.aclose()
        store.close()


def _labelled(backends: dict[tuple, Backend]) -> dict[str, Backend]:
    return {f"{b.name}:{b.model}": b for b in backends.values()}


def load_prices(path: str | None) -> dict[str, dict[str, float]]:
    """A JSON price table: {"MODEL or *": {"input": USD per 1M tokens, "output": USD per 1M tokens}}."""
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
) -> dict[str, Any]:
    with throughput_gc():
        return asyncio.run(
            _run_async(config, Path(run_dir), on_step or (lambda _p: None), on_start or (lambda _n, _r: None))
        )
