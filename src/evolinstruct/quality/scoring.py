"""`evolinstruct score`: difficulty, DEITA complexity and quality rankings, and cheap heuristics.

- difficulty: the paper's 1-10 rating prompt (the template set's `difficulty`), one call per record.
- complexity: DEITA's ranking prompt, a seed and its evolutions in one call; each gets a rank 1..n
  (n+1: "too complex to answer"). Ranks are relative within a lineage.
- quality: DEITA's quality ranking, adapted: DEITA ranks several responses to one instruction, a run
  has one response per instruction, so the (instruction, response) pairs of a lineage are ranked together.
- heuristics: see heuristics.py; no LLM.

Every call goes through CachedLLM with the run's store (purposes score_difficulty, score_complexity,
score_quality), so a rerun sends no call that is already stored. A call that fails stores no score and
is retried on the next run; an answer that does not parse stores NULL with the raw answer, and is counted.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from ..backends.base import Backend, Request, Result, Sampling
from ..config import EvolveConfig, ModelSpec
from ..llm import CachedLLM, CallCounters
from ..operations import request_seed
from ..outputs import STATS, write_json, write_outputs
from ..records import Record
from ..seeds import join_input
from ..slots import PrioritySlots
from ..store import STORE_FILE, RunStore
from ..templates import TemplateError, TemplateSet, load_templates
from .heuristics import TokenCounter, heuristic_scores
from .parsing import parse_difficulty, parse_ranking
from .summary import score_summary

LLM_SCORERS = ("difficulty", "complexity", "quality")
PURPOSES = {name: f"score_{name}" for name in LLM_SCORERS}
DIFFICULTY_MAX_TOKENS = 16
RANK_TOKENS_PER_ITEM = 8  # "[3] Score: 2\n" is about 7 tokens
MAX_ITEM_CHARS = 4000  # one item of a ranking prompt; keeps a lineage's prompt inside small models' context

# DEITA's complexity ranking prompt (Liu et al. 2023, "What Makes Good Data for Alignment?",
# arXiv 2312.15685, appendix). hkust-nlp/deita ships only its trained scorers' prompts
# (src/deita/selection/scorer/*.py); the ranking prompt's text is as in argilla-io/distilabel
# src/distilabel/steps/tasks/templates/complexity-scorer.jinja2, rendered here without Jinja.
COMPLEXITY_HEAD = (
    "Ranking the following questions according to the difficulty and complexity. Score 1-{n}.\n"
    "You can give a score of {n_plus_1} if the question is too complex for you to answer it. You should\n"
    "respond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n"
)
# DEITA's quality ranking prompt (same paper; distilabel quality-scorer.jinja2). DEITA lists several
# responses to one #Question#; here each item is an instruction with its response.
QUALITY_HEAD = (
    "Rank the following pair of instructions and responses according to their quality. Your evaluation should "
    "consider factors such as helpfulness, relevance, accuracy, depth, creativity, and level of detail of the "
    "response. Score 1-{n}.\n"
    "Score each response from 1 to {n}, with {n_plus_1} reserved for responses that are already very well "
    "written and cannot be improved further. You should respond with the format:\n[1] Score: 1\n[2] Score: 2\n...\n"
)


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ITEM_CHARS else text[:MAX_ITEM_CHARS] + " ..."


def render_complexity(questions: list[str]) -> str:
    n = len(questions)
    head = COMPLEXITY_HEAD.replace("{n}", str(n)).replace("{n_plus_1}", str(n + 1))
    return head + "".join(f"\n[{i}] {_clip(q)}" for i, q in enumerate(questions, 1)) + "\n"


def render_quality(pairs: list[tuple[str, str]]) -> str:
    n = len(pairs)
    head = QUALITY_HEAD.replace("{n}", str(n)).replace("{n_plus_1}", str(n + 1))
    items = "".join(
        f"\n[{i}] #Question#: {_clip(q)}\n#Response#: {_clip(r)}" for i, (q, r) in enumerate(pairs, 1)
    )
    return head + items + "\n"


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


def model_spec(stored: dict[str, Any], options: ScoreOptions) -> ModelSpec:
    """The run's own evolver unless --backend/--model/--base-url say otherwise."""
    base = stored.get("evolver") or {}
    stored_backend = base.get("backend", "local")
    if options.backend is None and options.model is None and options.base_url is None:
        return ModelSpec(backend=stored_backend, model=base.get("model"), api_key_env=options.api_key_env)
    backend = options.backend or ("openai" if options.base_url else stored_backend)
    model = options.model or (base.get("model") if backend == stored_backend else None)
    return ModelSpec(backend=backend, model=model, base_url=options.base_url, api_key_env=options.api_key_env)


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
                 progress: ScoreProgress) -> None:
        self.llm = llm
        self.templates = templates
        self.run_seed = int(stored.get("seed", 0))
        self.separator = stored.get("input_separator", "\n")
        self.options = options
        self.progress = progress

    def _prompt_of(self, record: Record) -> str:
        return join_input(record.instruction, record.input, self.separator)

    def _sampling(self, key: str, purpose: str, default_tokens: int) -> Sampling:
        # Greedy: a rating should not depend on the sampling draw.
        tokens = self.options.max_tokens or default_tokens
        return Sampling(temperature=0.0, top_p=1.0, max_tokens=tokens, seed=request_seed(self.run_seed, key, purpose))

    async def _call(self, scorer: str, key: str, prompt: str, default_tokens: int) -> str | None:
        purpose = PURPOSES[scorer]
        request = Request([{"role": "user", "content": prompt}], self._sampling(key, purpose, default_tokens))
        result = await self.llm(purpose, request)
        if not result.ok:
            self.progress.call_failures[scorer] += 1
            return None
        return result.text

    async def difficulty(self, record: Record) -> list[Row]:
        raw = await self._call("difficulty", record.id, self.templates.render_difficulty(self._prompt_of(record)),
                               DIFFICULTY_MAX_TOKENS)
        if raw is None:
            return []
        value, error = parse_difficulty(raw)
        detail: dict[str, Any] = {"raw": raw, "model": self.llm.model}
        if error:
            detail["error"] = error
            self.progress.parse_failures["difficulty"] += 1
        return [(record.id, "difficulty", value, detail)]

    async def _ranking(self, scorer: str, group: list[Record], prompt: str) -> list[Row]:
        n = len(group)
        raw = await self._call(scorer, group[0].root_id, prompt, RANK_TOKENS_PER_ITEM * n + 8)
        if raw is None:
            return []
        found, bad = parse_ranking(raw, n)
        rows: list[Row] = []
        for position, record in enumerate(group, 1):
            detail: dict[str, Any] = {"raw": raw, "model": self.llm.model, "lineage": group[0].root_id,
                                      "position": position, "items": n}
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
class LazyLocalBackend:
    """The in-process model, loaded on the first call the store cannot answer: a rerun whose calls are
    all stored loads no model."""

    name = "local"

    def __init__(self, build: Callable[[], Backend], model: str) -> None:
        self._build = build
        self.model = model  # the same display name LocalBackend takes, so call keys match
        self._backend: Backend | None = None
        self._lock = asyncio.Lock()

    async def generate(self, requests: list[Request]) -> list[Result]:
        async with self._lock:
            if self._backend is None:
                self._backend = await asyncio.to_thread(self._build)
        return await self._backend.generate(requests)

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()


def _backend(spec: ModelSpec, concurrency: int) -> Backend:
    from ..embedded import resolve_model_path
    from ..runner import _build  # the same backend wiring as evolve

    def build() -> Backend:
        return _build(spec, EvolveConfig(seeds="", concurrency=concurrency), {})

    if spec.backend == "local":
        return LazyLocalBackend(build, resolve_model_path(spec.model)[1])
    return build()


def _templates(stored: dict[str, Any]) -> TemplateSet:
    try:
        return load_templates(stored.get("templates") or "paper")
    except TemplateError:  # a custom set whose file moved: its difficulty prompt defaults to the paper's
        return load_templates("paper")


async def _score_async(
    run_dir: Path, options: ScoreOptions, on_start: Callable[[int, int, str], None],
    on_progress: Callable[[ScoreProgress], None],
) -> dict[str, Any]:
    started = time.perf_counter()
    if not (run_dir / STORE_FILE).exists():
        raise FileNotFoundError(f"{run_dir / STORE_FILE}: no run store here; run `evolinstruct evolve ... -o {run_dir}` first")
    store = RunStore(run_dir)
    backend: Backend | None = None
    try:
        stored = store.get_meta("config") or {}
        chosen = options.scorers()
        records = select_records(store, options.include_eliminated, options.limit)
        progress = ScoreProgress()
        counters = CallCounters()

        if "heuristics" in chosen:
            tokens = TokenCounter()
            store.save_scores(
                (r.id, h.scorer, h.value, h.detail) for r in records for h in heuristic_scores(r, tokens)
            )

        model_label = "-"
        llm_wanted = [s for s in chosen if s in LLM_SCORERS]
        if llm_wanted:
            backend = _backend(model_spec(stored, options), options.concurrency)
            llm = CachedLLM(backend, store, counters, slots=PrioritySlots(options.concurrency))
            model_label = backend.model
            jobs = plan_llm_jobs(Scorers(llm, _templates(stored), stored, options, progress), llm_wanted, records, progress)
        else:
            jobs = []
        progress.total = len(jobs)
        on_start(len(records), len(jobs), model_label)
        await _run_jobs(jobs, store, options.concurrency, progress, on_progress)

        write_outputs(store)  # dataset.jsonl now carries each row's scores
        stats = _update_stats(run_dir, store, counters, {
            "scorers": chosen,
            "model": model_label,
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
        if backend is not None:
            await backend.aclose()
        store.close()


async def _run_jobs(jobs: list[Callable[[], Awaitable[list[Row]]]], store: RunStore, concurrency: int,
                    progress: ScoreProgress, on_progress: Callable[[ScoreProgress], None]) -> None:
    """At most `concurrency` jobs at once, pulled from a queue (a 250K-record run never makes 250K tasks).
    Each job's scores are committed as soon as it returns."""
    queue: asyncio.Queue[Callable[[], Awaitable[list[Row]]]] = asyncio.Queue()
    for job in jobs:
        queue.put_nowait(job)

    async def worker() -> None:
        while not queue.empty():
            job = queue.get_nowait()
            rows = await job()
            if rows:
                store.save_scores(rows)
            progress.done += 1
            on_progress(progress)

    await asyncio.gather(*(worker() for _ in range(max(1, min(concurrency, len(jobs))))))


def _update_stats(run_dir: Path, store: RunStore, counters: CallCounters, score_run: dict[str, Any]) -> dict[str, Any]:
    """Add scoring to stats.json next to evolve's numbers: score purposes in calls_by_purpose, the
    store's token totals (all purposes), the scores section and this scoring run's own counts."""
    path = run_dir / STATS
    stats: dict[str, Any] = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
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
    stats["scores"] = score_summary(store)
    stats["score_run"] = score_run
    write_json(path, stats)
    return stats


def run_score(
    run_dir: str | Path,
    options: ScoreOptions,
    on_start: Callable[[int, int, str], None] | None = None,
    on_progress: Callable[[ScoreProgress], None] | None = None,
) -> dict[str, Any]:
    return asyncio.run(
        _score_async(Path(run_dir), options, on_start or (lambda _r, _j, _m: None), on_progress or (lambda _p: None))
    )


# ------------------------------------------------------------------------------------------ display
def summary_table(stats: dict[str, Any], run_dir: Path) -> Table:
    """Mean score by epoch next to the seeds' (the paper's table), with parse failures."""
    scores = stats.get("scores", {})
    epochs = sorted({int(e) for entry in scores.values() for e in entry["by_epoch"]})
    table = Table(title=f"scores: {run_dir}", title_justify="left")
    table.add_column("scorer", style="bold")
    for epoch in epochs:
        table.add_column("seeds" if epoch == 0 else f"epoch {epoch}", justify="right")
    for name in ("all", "scored", "parse failures"):
        table.add_column(name, justify="right")
    for scorer, entry in scores.items():
        cells = [_fmt(entry["by_epoch"].get(str(e))) for e in epochs]
        failures = entry["parse_failures"]
        table.add_row(scorer, *cells, _fmt(entry["mean"]), str(entry["scored"]),
                      f"[red]{failures}[/]" if failures else "0")
    return table


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"
