"""The optimizer loop of Auto Evol-Instruct (arXiv 2406.00770), on the run store.

A step, as the official optimizer.py @e26b08d runs it:
  1. the dev metrics of the current method (dev.py);
  2. an evolution trajectory: a training minibatch (`batch_size`) evolved `rounds` times by the current method;
  3. `candidates` candidate methods, each from a fresh conversation with the optimizer: trajectory analysis,
     then method optimization (the '```Optimized Method' block; none: the current method);
  4. each candidate's dev metrics;
  5. candidates sorted by score (stable: ties keep candidate order); the first whose success and score are
     both >= the current method's replaces it.
Concurrency: (1) runs beside (2)-(4); the candidates run at once, and the dev items of each at once.

Our differences (docs/AUTO_EVOL.md): failure is the paper's detector or our elimination rules or either
(`failure`); train, dev and holdout are disjoint slices drawn from `seed`; every call goes through the run
store (CachedLLM), so a rerun replays every stored answer and repeats the loop to the same method without
sending a stored call again; candidates differ by their sampling seed.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..calls import Budget, BudgetExhausted, CachedLLM, CallCounters, load_prices
from ..evolve.config import SEPARATORS
from ..evolve.templates import load_templates
from ..models.base import ModelSpec, Request, Result, Sampling, Transport
from ..models.registry import Backends
from ..records import Seed, file_digest, join_input, request_seed, rng_for, seed_record_id
from ..rundir import write_atomic_lines, write_json
from ..seeds import SeedColumns, read_seeds
from ..slots import PrioritySlots
from ..store import RunStore
from .dev import DevEvaluator, DevMetrics, Item
from .failure import FAILURE_MODES
from .prompts import cases_json, extract_method, load_prompts, method_template_set, optimization_prompt

METHOD_FILE = "method.json"
HISTORY_FILE = "history.jsonl"
INITIAL_METHOD_FILE = "initial_method.json"


class OptimizeError(RuntimeError):
    """A call that failed after the backend's retries: the loop stops; a rerun retries it (all else is stored)."""


@dataclass(slots=True)
class OptimizeConfig:
    seeds: str
    steps: int = 10
    candidates: int = 5  # the paper's m
    batch_size: int = 10  # the trajectory minibatch
    dev_size: int = 10
    rounds: int = 1  # trajectory length l
    holdout: int = 10  # seeds evolved with the initial and the final method at the end (0: no comparison)
    holdout_epochs: int = 1
    difficulty: bool = False  # score the holdout sides' difficulty (the paper's prompt, one call per record)
    seed: int = 0
    failure: str = "both"
    max_tokens: int = 1500  # the official optimizer's, for every call
    temperature: float = 0.0  # evolving and answering (the official optimizer's)
    top_p: float = 0.9
    optimizer_temperature: float = 0.7  # candidates must differ: ours (docs/AUTO_EVOL.md)
    judge_max_tokens: int = 16
    column: str = "instruction"
    input_column: str | None = "input"
    input_separator: str = SEPARATORS["repo"]
    evol: ModelSpec = field(default_factory=ModelSpec)
    optimizer: ModelSpec = field(default_factory=ModelSpec)
    transport: Transport = field(default_factory=Transport)
    max_calls: int | None = None
    max_cost: float | None = None
    prices: str | None = None

    def __post_init__(self) -> None:
        for name in ("steps", "candidates", "batch_size", "dev_size", "rounds", "holdout_epochs", "max_tokens"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be 1 or more")
        if self.holdout < 0:
            raise ValueError("--holdout must be 0 or more")
        if self.failure not in FAILURE_MODES:
            raise ValueError(f"--failure must be one of {', '.join(FAILURE_MODES)}, not '{self.failure}'")
        if self.max_cost is not None and self.prices is None:
            raise ValueError("--max-cost needs --prices FILE (a price table) to know what calls cost")

    def bound(self, seeds_digest: str) -> dict[str, Any]:
        """What an OPT_DIR is bound to: everything that changes the method or the holdout runs (whose RUN_DIRs
        are bound too: better refused here, at once), except how many steps to run and --difficulty."""
        def model(spec: ModelSpec) -> dict[str, Any]:
            return {"backend": spec.backend, "model": spec.model}

        return {
            "seeds_file": Path(self.seeds).name, "seeds_sha256": seeds_digest, "seed": self.seed,
            "candidates": self.candidates, "batch_size": self.batch_size, "dev_size": self.dev_size,
            "rounds": self.rounds, "holdout": self.holdout, "holdout_epochs": self.holdout_epochs,
            "failure": self.failure,
            "max_tokens": self.max_tokens, "temperature": self.temperature, "top_p": self.top_p,
            "optimizer_temperature": self.optimizer_temperature, "judge_max_tokens": self.judge_max_tokens,
            "column": self.column, "input_column": self.input_column, "input_separator": self.input_separator,
            "evol": model(self.evol), "optimizer": model(self.optimizer),
            "prompts": load_prompts().source,
        }


@dataclass(slots=True)
class Split:
    train: list[Item]
    dev: list[Item]
    holdout: list[Seed]


def split_seeds(seeds: list[Seed], config: OptimizeConfig) -> Split:
    """Disjoint dev, holdout and train slices of a permutation drawn from --seed alone."""
    need = config.dev_size + config.holdout + 1
    if len(seeds) < need:
        raise ValueError(f"{config.seeds}: {len(seeds)} seeds, but --dev-size {config.dev_size} + --holdout "
                         f"{config.holdout} + at least 1 training seed need {need}; lower them or add seeds")
    order = rng_for("optimize-split", config.seed).sample(range(len(seeds)), len(seeds))
    dev_at, hold_at = order[: config.dev_size], order[config.dev_size : config.dev_size + config.holdout]
    train_at = sorted(order[config.dev_size + config.holdout :])

    def item(i: int) -> Item:
        s = seeds[i]
        return Item(seed_record_id(s.index, s.instruction, s.input), join_input(s.instruction, s.input, config.input_separator))

    return Split(train=[item(i) for i in train_at], dev=[item(i) for i in sorted(dev_at)],
                 holdout=[seeds[i] for i in sorted(hold_at)])


def minibatch(train: list[Item], config: OptimizeConfig, step: int) -> list[Item]:
    k = min(config.batch_size, len(train))
    return sorted(rng_for("optimize-batch", config.seed, step).sample(train, k), key=train.index)


def choose(current: DevMetrics, candidates: list[DevMetrics]) -> int | None:
    """The official rule: candidates by score, highest first (ties: candidate order); the first whose success
    and score are both at least the current method's is accepted. None: the current method stays."""
    for k in sorted(range(len(candidates)), key=lambda k: -candidates[k].score):
        c = candidates[k]
        if c.success >= current.success and c.score >= current.score:
            return k
    return None


Event = Callable[[dict[str, Any]], None]


class Optimizer:
    def __init__(self, config: OptimizeConfig, split: Split, evol: CachedLLM, optimizer: CachedLLM,
                 counters: CallCounters, on_event: Event) -> None:
        self.config, self.split = config, split
        self.evol_llm, self.opt_llm, self.counters = evol, optimizer, counters
        self.on_event = on_event
        self.prompts = load_prompts()
        self.dev = DevEvaluator(split.dev, self._evol_call, self._sampling, config.failure,
                                load_templates("paper"))
        self._metrics: dict[str, asyncio.Task[DevMetrics]] = {}
        self.history: list[dict[str, Any]] = []  # one row per finished step (history.jsonl)
        self.steps: list[dict[str, Any]] = []  # its calls and seconds (stats.json)

    # ------------------------------------------------------------------ calls
    @staticmethod
    async def _checked(llm: CachedLLM, purpose: str, request: Request) -> Result:
        result = await llm(purpose, request)
        if not result.ok:
            raise OptimizeError(f"a {purpose} call failed ({result.error}); every finished call is stored: "
                                "rerun the same command to retry it")
        return result

    async def _evol_call(self, purpose: str, request: Request) -> Result:
        return await self._checked(self.evol_llm, purpose, request)

    def _sampling(self, purpose: str, item_id: str) -> Sampling:
        c = self.config
        seed = request_seed(c.seed, item_id, purpose)
        if purpose == "equality":
            return Sampling(temperature=0.0, top_p=1.0, max_tokens=c.judge_max_tokens, seed=seed)
        return Sampling(temperature=c.temperature, top_p=c.top_p, max_tokens=c.max_tokens, seed=seed)

    def _opt_sampling(self, purpose: str, step: int, k: int) -> Sampling:
        c = self.config
        return Sampling(temperature=c.optimizer_temperature, top_p=c.top_p, max_tokens=c.max_tokens,
                        seed=request_seed(c.seed, f"step{step}:candidate{k}", purpose))

    # ------------------------------------------------------------------ parts of a step
    def metrics(self, method: str) -> asyncio.Task[DevMetrics]:
        """The dev metrics of `method`, computed once per run however many candidates propose it."""
        task = self._metrics.get(method)
        if task is None:
            task = self._metrics[method] = asyncio.ensure_future(self.dev.metrics(method))
        return task

    async def trajectory(self, method: str, batch: list[Item]) -> list[dict[str, Any]]:
        async def one(i: int, item: Item) -> dict[str, Any]:
            case: dict[str, Any] = {"id": i, "stage0": item.text}
            text = item.text
            for r in range(1, self.config.rounds + 1):
                result = await self.dev.evolve(method, text, f"{item.id}:round{r}", "trajectory")
                text = self.dev.extract(result.text)
                case[f"stage{r}"] = text
            return case

        return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(batch))))

    async def candidate(self, step: int, k: int, method: str, cases: list[dict[str, Any]]) -> dict[str, Any]:
        first = [{"role": "user", "content": self.prompts.trajectory_analysis + cases_json(cases)}]
        analysis = await self._checked(self.opt_llm, "analysis", Request(first, self._opt_sampling("analysis", step, k)))
        conversation = [*first, {"role": "assistant", "content": analysis.text},
                        {"role": "user", "content": optimization_prompt(method)}]
        reply = await self._checked(self.opt_llm, "optimization",
                                    Request(conversation, self._opt_sampling("optimization", step, k)))
        proposed = extract_method(reply.text)
        dev = await self.metrics(proposed or method)
        row = {"index": k, "optimized": proposed is not None, "method": proposed, "dev": dev.to_dict(),
               "analysis": analysis.text, "reply": reply.text}
        self.on_event({"event": "candidate", "step": step, "index": k, "optimized": proposed is not None,
                       "dev": dev.to_dict()})
        return row

    async def step(self, step: int, method: str) -> dict[str, Any]:
        current_task = self.metrics(method)  # beside the trajectory and the candidates
        batch = minibatch(self.split.train, self.config, step)
        cases = await self.trajectory(method, batch)
        rows = list(await asyncio.gather(*(self.candidate(step, k, method, cases)
                                           for k in range(self.config.candidates))))
        current = await current_task
        metrics = [DevMetrics(**r["dev"]) for r in rows]
        accepted = choose(current, metrics)
        after = rows[accepted]["method"] or method if accepted is not None else method
        return {"step": step, "method": method, "dev": current.to_dict(), "train_ids": [i.id for i in batch],
                "trajectory": cases, "candidates": rows, "accepted": accepted, "changed": after != method,
                "method_after": after}

    async def run(self, out: Path) -> str:
        method = self.prompts.init_method
        history = self.history
        for step in range(1, self.config.steps + 1):
            self.on_event({"event": "step", "step": step})
            before = (sum(self.counters.sent.values()), sum(self.counters.cache_hits.values()))
            started = time.perf_counter()
            row = await self.step(step, method)
            timing = {"step": step, "seconds": round(time.perf_counter() - started, 3),
                      "calls_sent": sum(self.counters.sent.values()) - before[0],
                      "cache_hits": sum(self.counters.cache_hits.values()) - before[1],
                      "accepted": row["accepted"], "changed": row["changed"]}
            history.append(row)
            method = row["method_after"]
            write_atomic_lines(out / HISTORY_FILE, history)
            write_json(out / METHOD_FILE, method_template_set(method))
            self.steps.append(timing)
            self.on_event({"event": "step_done", "step": step, **timing, "dev": row["dev"]})
        return method


def read_all_seeds(config: OptimizeConfig) -> list[Seed]:
    columns = SeedColumns(instruction=config.column, input=config.input_column)
    return list(read_seeds(config.seeds, columns))


async def optimize_async(config: OptimizeConfig, out: Path, split: Split, on_event: Event) -> dict[str, Any]:
    started = time.perf_counter()
    store = RunStore(out)
    backends = Backends(config.transport)
    try:
        resumed = store.bind_config(config.bound(file_digest(config.seeds)))
        store.set_meta("roles", {"evol": config.evol.to_dict(), "optimizer": config.optimizer.to_dict()})
        counters = CallCounters()
        budget = Budget(max_calls=config.max_calls, max_cost=config.max_cost, prices=load_prices(config.prices))
        slots = PrioritySlots(config.transport.concurrency)
        evol = CachedLLM(backends.get(config.evol), store, counters, budget, slots)
        opt = CachedLLM(backends.get(config.optimizer), store, counters, budget, slots)
        write_json(out / INITIAL_METHOD_FILE, method_template_set(load_prompts().init_method, "auto-evol-initial"))
        optimizer = Optimizer(config, split, evol, opt, counters, on_event)
        on_event({"event": "start", "resumed": resumed, "train": len(split.train), "dev": len(split.dev),
                  "holdout": len(split.holdout)})
        stopped_by = None
        try:
            final = await optimizer.run(out)
        except BudgetExhausted as exc:
            stopped_by = str(exc)
            final = optimizer.history[-1]["method_after"] if optimizer.history else load_prompts().init_method
        finally:
            for task in optimizer._metrics.values():
                task.cancel()
        history, steps = optimizer.history, optimizer.steps
        elapsed = time.perf_counter() - started
        total = (store.get_meta("seconds_total") or 0.0) + elapsed
        store.set_meta("seconds_total", total)
        if not history:
            write_json(out / METHOD_FILE, method_template_set(final))
        first_dev = history[0]["dev"] if history else None
        final_dev = None
        if history:
            last = history[-1]
            final_dev = (last["candidates"][last["accepted"]]["dev"] if last["accepted"] is not None else last["dev"])
        return {
            "steps_planned": config.steps,
            "steps_done": len(history),
            "accepted_steps": [r["step"] for r in history if r["changed"]],
            "failure": config.failure,
            "split": {"train": len(split.train), "dev": len(split.dev), "holdout": len(split.holdout)},
            "initial": first_dev,
            "final": final_dev,
            "final_method_changed": final != load_prompts().init_method,
            "steps": steps,
            "llm_calls": sum(counters.sent.values()),
            "cache_hits": sum(counters.cache_hits.values()),
            "failed_calls": sum(counters.failed.values()),
            "calls_by_purpose": counters.as_dict(),
            "stored_calls": sum(t["calls"] for t in store.call_totals().values()),
            **({"cost_usd": round(budget.cost, 6)} if config.prices else {}),  # this process's: the holdout's budget
            "models": {"evol": evol.model, "optimizer": opt.model},
            "resumed": resumed,
            "stopped_by": stopped_by,
            "seconds": round(elapsed, 3),
            "seconds_total": round(total, 3),
        }
    finally:
        await backends.aclose()
        store.close()
