"""`evolinstruct score`: difficulty, DEITA complexity and quality rankings, and cheap heuristics.

- difficulty: the paper's 1-10 rating prompt (the template set's `difficulty`), one call per record.
- complexity: DEITA's ranking prompt, a seed and its evolutions in one call; each gets a rank 1..n
  (n+1: "too complex to answer"). Ranks are relative within a lineage.
- quality: DEITA's quality ranking, adapted: DEITA ranks several responses to one instruction, a run
  has one response per instruction, so the (instruction, response) pairs of a lineage are ranked together.
- heuristics: see heuristics.py; no LLM.

Guided (`--guide`, on by default for an in-process model): the answer must open with its score head
(parsing.py DIFFICULTY_HEAD, ranking_head), enforced while decoding, and is read from that head only.
A served model keeps the paper's and DEITA's free-text answers and the lenient parsers.

Every call goes through CachedLLM with the run's store (purposes score_difficulty, score_complexity,
score_quality), so a rerun sends no call that is already stored; a guided request has its own key
(the guide is part of it), so stored unguided answers are not replayed for guided calls, nor the
reverse. A call that fails stores no score and is retried on the next run; an answer that does not
parse stores NULL with the raw answer, and is counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...batches import BatchBackend, BatchCollector
from ...calls import CachedLLM, CallCounters
from ...evolve.config import stored_separator
from ...evolve.outputs import write_outputs
from ...evolve.templates import TemplateError, TemplateSet, load_templates
from ...models.base import ModelSpec, Request, Sampling, Transport
from ...models.batchapi import build_batch_api
from ...models.registry import Backends
from ...models.spec import GUIDES, endpoint, guided, resolve_role
from ...records import Record, join_input, request_seed
from ...rundir import RunDir, write_stats
from ...slots import PrioritySlots
from ...store import RunStore
from .heuristics import TokenCounter, heuristic_scores
from .parsing import (
    DIFFICULTY_HEAD,
    parse_difficulty,
    parse_difficulty_head,
    parse_ranking,
    parse_ranking_head,
    ranking_head,
)
from .rankings import render_complexity, render_quality

LLM_SCORERS = ("difficulty", "complexity", "quality")
PURPOSES = {name: f"score_{name}" for name in LLM_SCORERS}
DIFFICULTY_MAX_TOKENS = 16
RANK_TOKENS_PER_ITEM = 8  # "[3] Score: 2\n" is about 7 tokens
# Guided, the answer that matters is the head ("7\n" is 2-3 tokens); what follows is not read, so a
# guided difficulty call stops soon after it. A ranking's head is n lines of about 8 tokens.
GUIDED_DIFFICULTY_MAX_TOKENS = 4
GUIDED_RANK_TOKENS_PER_ITEM = 10
def resolve_guide(choice: str, spec: ModelSpec) -> bool:
    """--guide: see models/spec.py `guided`."""
    return guided(choice, spec, "--guide", "scoring model")

# ------------------------------------------------------------------------------------------ options
@dataclass(slots=True)
class ScoreOptions:
    difficulty: bool = False
    complexity: bool = False
    quality: bool = False
    heuristics: bool = False
    backend: str | None = None
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    concurrency: int = 32
    max_tokens: int | None = None  # per call; default 16 for difficulty, 8 per item (+8) for rankings
    limit: int | None = None
    include_eliminated: bool = False
    guide: str = "auto"  # auto|on|off: answers that must open with their score head (in-process models)
    batch: str | None = None  # --batch openai|anthropic: every scoring call in provider batch rounds (batches.py)
    batch_max_requests: int | None = None
    batch_poll: float = 60.0

    def scorers(self) -> list[str]:
        """The scorer groups asked for; none named means heuristics and difficulty."""
        chosen = [name for name in ("heuristics", *LLM_SCORERS) if getattr(self, name)]
        return chosen or ["heuristics", "difficulty"]


@dataclass(slots=True)
class ScoreProgress:
    total: int = 0  # LLM jobs: one per record for difficulty, one per lineage for rankings
    done: int = 0
    parse_failures: Counter = field(default_factory=Counter)
    call_failures: Counter = field(default_factory=Counter)
    skipped: Counter = field(default_factory=Counter)  # lineages with a single item: nothing to rank


Row = tuple[str, str, float | None, dict[str, Any]]


def run_evolver(store: RunStore) -> ModelSpec:
    """The run's evolving model with its endpoint (stored since runs keep their roles; an older run has
    only its bound backend and model)."""
    roles = store.get_meta("roles") or {}
    bound = store.get_meta("config") or {}
    return ModelSpec.from_dict(roles.get("evolver") or bound.get("evolver")) or ModelSpec()


def model_spec(store: RunStore, options: ScoreOptions) -> ModelSpec:
    """The run's own evolver (model and endpoint) unless --backend/--model/--base-url say otherwise."""
    spec = resolve_role(options.backend, options.model, options.base_url, options.api_key_env,
                        fallback=run_evolver(store), option="score")
    assert spec is not None
    return spec


def select_records(store: RunStore, include_eliminated: bool, limit: int | None) -> list[Record]:
    wanted = ("kept", "eliminated") if include_eliminated else ("kept",)
    records = [r for r in store.iter_records() if r.status in wanted]
    return records[:limit] if limit else records


def lineages(records: list[Record]) -> list[list[Record]]:
    """Records grouped by seed, seed first, then by epoch (the store's order)."""
    groups: dict[str, list[Record]] = {}
    for record in records:
        groups.setdefault(record.root_id, []).append(record)
    return list(groups.values())


# ------------------------------------------------------------------------------------------ the scorers
class Scorers:
    def __init__(self, llm: CachedLLM, templates: TemplateSet, stored: dict[str, Any], options: ScoreOptions,
                 progress: ScoreProgress, guided: bool = False) -> None:
        self.llm = llm
        self.guided = guided
        self.templates = templates
        self.run_seed = int(stored.get("seed", 0))
        self.separator = stored_separator(stored)
        self.options = options
        self.progress = progress

    def _prompt_of(self, record: Record) -> str:
        return join_input(record.instruction, record.input, self.separator)

    def _sampling(self, key: str, purpose: str, default_tokens: int) -> Sampling:
        # Greedy: a rating should not depend on the sampling draw.
        tokens = self.options.max_tokens or default_tokens
        return Sampling(temperature=0.0, top_p=1.0, max_tokens=tokens, seed=request_seed(self.run_seed, key, purpose))

    async def _call(self, scorer: str, key: str, prompt: str, default_tokens: int, guide: str | None) -> str | None:
        purpose = PURPOSES[scorer]
        request = Request([{"role": "user", "content": prompt}], self._sampling(key, purpose, default_tokens),
                          guide=guide if self.guided else None)
        result = await self.llm(purpose, request)
        if not result.ok:
            self.progress.call_failures[scorer] += 1
            return None
        return result.text

    async def difficulty(self, record: Record) -> list[Row]:
        raw = await self._call("difficulty", record.id, self.templates.render_difficulty(self._prompt_of(record)),
                               GUIDED_DIFFICULTY_MAX_TOKENS if self.guided else DIFFICULTY_MAX_TOKENS, DIFFICULTY_HEAD)
        if raw is None:
            return []
        value, error = parse_difficulty_head(raw) if self.guided else parse_difficulty(raw)
        detail: dict[str, Any] = {"raw": raw, "model": self.llm.model, "guided": self.guided}
        if error:
            detail["error"] = error
            self.progress.parse_failures["difficulty"] += 1
        return [(record.id, "difficulty", value, detail)]

    async def _ranking(self, scorer: str, group: list[Record], prompt: str) -> list[Row]:
        n = len(group)
        per_item = GUIDED_RANK_TOKENS_PER_ITEM if self.guided else RANK_TOKENS_PER_ITEM
        raw = await self._call(scorer, group[0].root_id, prompt, per_item * n + 8, ranking_head(n))
        if raw is None:
            return []
        found, bad = parse_ranking_head(raw, n) if self.guided else parse_ranking(raw, n)
        rows: list[Row] = []
        for position, record in enumerate(group, 1):
            detail: dict[str, Any] = {"raw": raw, "model": self.llm.model, "guided": self.guided,
                                      "lineage": group[0].root_id, "position": position, "items": n}
            if position in bad:
                detail["error"] = bad[position]
                self.progress.parse_failures[scorer] += 1
            rows.append((record.id, scorer, found.get(position), detail))
        return rows

    async def complexity(self, group: list[Record]) -> list[Row]:
        return await self._ranking("complexity", group, render_complexity([self._prompt_of(r) for r in group]))

    async def quality(self, group: list[Record]) -> list[Row]:
        pairs = [(self._prompt_of(r), r.output) for r in group]
        return await self._ranking("quality", group, render_quality(pairs))


def plan_llm_jobs(scorers: Scorers, chosen: list[str], records: list[Record],
                  progress: ScoreProgress) -> list[Callable[[], Awaitable[list[Row]]]]:
    """One job per record for difficulty and one per lineage of 2+ items for each ranking."""
    jobs: list[Callable[[], Awaitable[list[Row]]]] = []
    if "difficulty" in chosen:
        jobs += [lambda r=r: scorers.difficulty(r) for r in records]
    for scorer in ("complexity", "quality"):
        if scorer not in chosen:
            continue
        for group in lineages(records):
            if scorer == "quality":
                group = [r for r in group if r.output.strip()]  # an eliminated record may have no response
            if len(group) < 2:
                progress.skipped[scorer] += len(group)
                continue
            method = scorers.complexity if scorer == "complexity" else scorers.quality
            jobs.append(lambda g=group, m=method: m(g))
    return jobs


# ------------------------------------------------------------------------------------------ the run
def run_templates(store: RunStore) -> TemplateSet:
    """The run's own template set: as stored with the run, else by the name it was bound with."""
    data = store.get_meta("template_set")
    if data:
        return TemplateSet.from_data(data, f"{store.path} (stored template set)")
    name = (store.get_meta("config") or {}).get("templates") or "paper"
    try:
        return load_templates(name)
    except TemplateError as exc:
        raise TemplateError(f"{exc}; this run was made with template set '{name}': pass its file again") from None


async def _score_async(
    run_dir: Path, options: ScoreOptions, on_start: Callable[[int, int, str, str, bool | None], None],
    on_progress: Callable[[ScoreProgress], None],
) -> dict[str, Any]:
    started = time.perf_counter()
    if options.guide not in GUIDES:
        raise ValueError(f"--guide must be one of {', '.join(GUIDES)}, not '{options.guide}'")
    if not RunDir(run_dir).store.exists():
        raise FileNotFoundError(f"{RunDir(run_dir).store}: no run store here; run `evolinstruct evolve ... -o {run_dir}` first")
    store = RunStore(run_dir)
    backends = Backends(Transport(concurrency=options.concurrency), lazy=True)
    try:
        stored = store.get_meta("config") or {}
        chosen = options.scorers()
        records = select_records(store, options.include_eliminated, options.limit)
        progress = ScoreProgress()
        counters = CallCounters()
        llm_wanted = [s for s in chosen if s in LLM_SCORERS]
        # The scoring model and the guide setting first: `--guide on` for a model that cannot be guided
        # fails here, before any score is written or any call is made.
        spec = model_spec(store, options) if llm_wanted else None
        guided = resolve_guide(options.guide, spec) if spec is not None else None

        if "heuristics" in chosen:
            tokens = TokenCounter()
            store.save_scores(
                (r.id, h.scorer, h.value, h.detail) for r in records for h in heuristic_scores(r, tokens)
            )

        model_label, where = "-", ""
        collector: BatchCollector | None = None
        if spec is not None:
            backend = backends.get(spec)
            slots = PrioritySlots(options.concurrency)
            if options.batch:  # one round holds every scoring call; a killed run polls its batches again
                if not spec.model:
                    raise ValueError("--batch needs a served model (--model)")
                transport = Transport(concurrency=options.concurrency)
                collector = BatchCollector(build_batch_api(options.batch, spec, transport), store,
                                           poll=options.batch_poll, max_requests=options.batch_max_requests)
                collector.feeding = False
                backend, slots = BatchBackend(collector, spec.backend, spec.model), PrioritySlots(1 << 30)
            llm = CachedLLM(backend, store, counters, slots=slots)
            model_label = backend.model
            where = endpoint(spec)
            scorers = Scorers(llm, run_templates(store), stored, options, progress, guided=bool(guided))
            jobs = plan_llm_jobs(scorers, llm_wanted, records, progress)
        else:
            jobs = []
        progress.total = len(jobs)
        on_start(len(records), len(jobs), model_label, where, guided)
        if collector is None:
            await _run_jobs(jobs, store, options.concurrency, progress, on_progress)
        else:
            try:
                await collector.recover()
                await _run_jobs(jobs, store, len(jobs), progress, on_progress, collector)
            finally:
                await collector.aclose()

        write_outputs(store)  # dataset.jsonl now carries each row's scores
        stats = _update_stats(run_dir, store, counters, {
            "scorers": chosen,
            "model": model_label,
            # on: answers opened with their score head, enforced while decoding; null: no LLM scorer ran
            "guide": None if guided is None else ("on" if guided else "off"),
            "records": len(records),
            "llm_calls": sum(counters.sent.values()),
            "cache_hits": sum(counters.cache_hits.values()),
            "call_failures": dict(progress.call_failures),
            "parse_failures": dict(progress.parse_failures),
            "skipped_single_item_lineages": dict(progress.skipped),
            "seconds": round(time.perf_counter() - started, 3),
        })
        return stats
    finally:
        await backends.aclose()
        store.close()


async def _run_jobs(jobs: list[Callable[[], Awaitable[list[Row]]]], store: RunStore, concurrency: int,
                    progress: ScoreProgress, on_progress: Callable[[ScoreProgress], None],
                    collector: BatchCollector | None = None) -> None:
    """At most `concurrency` jobs at once, pulled from a queue (a 250K-record run never makes 250K tasks).
    Each job's scores are committed as soon as it returns."""
    queue: asyncio.Queue[Callable[[], Awaitable[list[Row]]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def work() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            rows = await job()
            if rows:
                store.save_scores(rows)
            progress.done += 1
            on_progress(progress)

    async def worker(n: int) -> None:
        if collector is None:
            await work()
            return
        with collector.chain(n):  # batch rounds: a round goes when every worker waits
            await work()

    await asyncio.gather(*(worker(n) for n in range(max(1, min(concurrency, len(jobs))))))


def _update_stats(run_dir: Path, store: RunStore, counters: CallCounters, score_run: dict[str, Any]) -> dict[str, Any]:
    """Add scoring to stats.json next to evolve's numbers: score purposes in calls_by_purpose, the
    store's token totals (all purposes), the scores section and this scoring run's own counts."""
    return write_stats(run_dir, lambda stats: _with_scores(stats, store, counters, score_run))


def _with_scores(stats: dict[str, Any], store: RunStore, counters: CallCounters, score_run: dict[str, Any]) -> dict[str, Any]:
    by_purpose = stats.setdefault("calls_by_purpose", {})
    used = [PURPOSES[s] for s in score_run["scorers"] if s in PURPOSES]
    for table, values in counters.as_dict().items():
        # This run's counts replace the previous run's for the scorers it ran; the others stay.
        by_purpose.setdefault(table, {}).update({purpose: values.get(purpose, 0) for purpose in used})
    totals = store.call_totals()
    stats["tokens"] = {
        "prompt": sum(t["prompt_tokens"] for t in totals.values()),
        "completion": sum(t["completion_tokens"] for t in totals.values()),
        "by_purpose": totals,
    }
    stats["stored_calls"] = sum(t["calls"] for t in totals.values())
    stats["pending_failures"] = len(store.failures())
    stats["scores"] = store.score_summary()
    stats["score_run"] = score_run
    return stats


def run_score(
    run_dir: str | Path,
    options: ScoreOptions,
    on_start: Callable[[int, int, str, str, bool | None], None] | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> dict[str, Any]:
    return asyncio.run(
        _score_async(Path(run_dir), options, on_start or (lambda _r, _j, _m, _e, _g: None), on_progress or (lambda _p: None))
    )
