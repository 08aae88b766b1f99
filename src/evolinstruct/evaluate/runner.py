"""Run an evaluation: answer with the model and the reference, judge, score, write EVAL_DIR.

Every call goes through `CachedLLM` on the run store EVAL_DIR/run.sqlite (purposes `eval_answer`,
`eval_reference`, `eval_judge`), so a rerun replays stored answers and verdicts and sends no call twice.
EVAL_DIR is bound to the settings that change results; `--limit` is not one of them, so a larger
limit reuses every stored call.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..batches import BatchBackend, BatchCollector
from ..calls import Budget, CachedLLM, CallCounters
from ..models.base import Backend, ModelSpec, Request, Result, Sampling, Transport, capabilities
from ..models.batchapi import build_batch_api
from ..models.registry import Backends
from ..models.spec import guided, is_embedded
from ..records import derive_seed, file_digest
from ..rundir import write_json
from ..slots import PrioritySlots
from ..store import RunStore
from .parsing import PAIR_HEAD, RATING_HEAD, parse_head_scores, parse_pair_scores, parse_rating
from .prompts import judge_category, load_pair_prompts, load_single_prompts, mtbench_judge_messages
from .stats import Scored, summarize
from .testsets import BUILTIN, EvalItem, data_file, load_testset

RESULTS = "results.json"
ANSWERS = "answers.jsonl"
JUDGMENTS = "judgments.jsonl"

# Answer sampling of the WizardLM repo's inference script (src/inference_wizardlm.py): temperature 1,
# top-p 0.9, up to 2048 new tokens. MT-Bench follows FastChat's gen_model_answer: 1024 new tokens and a
# temperature per category; its judge samples greedily with up to 2048 tokens.
PAPER_SAMPLING = {"temperature": 1.0, "top_p": 0.9, "max_tokens": 2048}
MTBENCH_MAX_TOKENS = 1024
MTBENCH_TEMPERATURE = {"writing": 0.7, "roleplay": 0.7, "extraction": 0.0, "math": 0.0, "coding": 0.0,
                       "reasoning": 0.0, "stem": 0.1, "humanities": 0.1}
MTBENCH_JUDGE = {"temperature": 0.0, "max_tokens": 2048}
# The paper's settings are for real models. The embedded 135M default runs on the CPU at about 20-70 tokens/s
# and rambles to any limit, so when a role is the embedded model and no limit is given, its answers stop at
# 256 tokens and its verdicts at 64 (FastChat reads the scores from the first line only).
EMBEDDED_ANSWER_MAX_TOKENS = 256
EMBEDDED_JUDGE_MAX_TOKENS = 64


POSITIONS = ("swap", "alternate")
# Guided verdicts (a departure from FastChat, for small in-process judges; see docs/EVAL.md): the verdict
# must open with its scores, which the local backend enforces while decoding (models/guide.py). The
# judge still chooses the numbers; the explanation that follows is free.
def resolve_guide(choice: str, judge: ModelSpec) -> bool:
    """--judge-guide: see models/spec.py `guided`."""
    return guided(choice, judge, "--judge-guide", "judge")


@dataclass(slots=True)
class EvalConfig:
    testset: str = "wizardlm"
    limit: int | None = None
    data_dir: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    reference: ModelSpec = field(default_factory=ModelSpec)
    judge: ModelSpec = field(default_factory=ModelSpec)
    temperature: float | None = None  # None: the test set's paper default
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int = 0
    reference_temperature: float | None = None  # None: as the model
    reference_seed: int | None = None  # None: seed + 1, so the embedded reference answers differently
    judge_temperature: float | None = None  # None: FastChat's reviewer setting (0.2; MT-Bench 0)
    judge_max_tokens: int | None = None
    position: str = "swap"  # swap: judge both orders; alternate: the paper's odd/even order
    judge_guide: str = "auto"  # auto|on|off: verdicts that must open with their scores (in-process judges)
    bootstrap: int = 1000
    # Operational: speed and limits only, not bound to EVAL_DIR.
    concurrency: int = 32
    request_timeout: float = 600.0
    max_retries: int = 6
    max_calls: int | None = None
    batch: str | None = None  # --batch openai|anthropic: every call in provider batch rounds (batches.py)
    batch_max_requests: int | None = None
    batch_poll: float = 60.0

    def guided(self) -> bool:
        return resolve_guide(self.judge_guide, self.judge)

    def bound(self, testset_digest: str) -> dict[str, Any]:
        data = asdict(self)
        for key in ("limit", "data_dir", "concurrency", "request_timeout", "max_retries", "max_calls", "bootstrap",
                    "batch", "batch_max_requests", "batch_poll"):
            data.pop(key)
        for role in ("model", "reference", "judge"):
            data[role] = {"backend": data[role]["backend"], "model": data[role]["model"] or "embedded"}
        data["judge_guide"] = "on" if self.guided() else "off"
        data["testset_sha256"] = testset_digest
        return data


@dataclass(slots=True)
class EvalProgress:
    total: int = 0
    done: int = 0
    failed: int = 0
    unparsed: int = 0


class _Failed(Exception):
    """A call failed after the backend's retries; the question is left for the next run."""


class Evaluation:
    def __init__(self, config: EvalConfig, kind: str, roles: dict[str, CachedLLM], on_item: Callable[[EvalProgress], None]) -> None:
        self.config = config
        self.kind = kind
        self.roles = roles
        self.on_item = on_item
        self.progress = EvalProgress()
        self.pair_prompts = load_pair_prompts(config.data_dir) if kind == "pairwise" else {}
        self.single_prompts = load_single_prompts(config.data_dir) if kind == "mtbench" else {}
        self.guided = config.guided()

    # ------------------------------------------------------------------ sampling
    def answer_sampling(self, item: EvalItem, role: str, turn: int) -> Sampling:
        c = self.config
        if self.kind == "mtbench":
            temperature = MTBENCH_TEMPERATURE.get(item.skill.lower(), 0.7)
            top_p, max_tokens = 1.0, MTBENCH_MAX_TOKENS
        else:
            temperature, top_p, max_tokens = PAPER_SAMPLING["temperature"], PAPER_SAMPLING["top_p"], PAPER_SAMPLING["max_tokens"]
        temperature = c.temperature if c.temperature is not None else temperature
        if role == "reference" and c.reference_temperature is not None:
            temperature = c.reference_temperature
        if is_embedded(getattr(c, role)):
            max_tokens = min(max_tokens, EMBEDDED_ANSWER_MAX_TOKENS)
        seed = c.seed if role == "model" else (c.reference_seed if c.reference_seed is not None else c.seed + 1)
        return Sampling(
            temperature=temperature,
            top_p=c.top_p if c.top_p is not None else top_p,
            max_tokens=c.max_tokens or max_tokens,
            seed=derive_seed(seed, role, item.id, turn),
        )

    def judge_sampling(self, default_temperature: float, default_max_tokens: int, *key: object) -> Sampling:
        c = self.config
        if is_embedded(c.judge):
            default_max_tokens = min(default_max_tokens, EMBEDDED_JUDGE_MAX_TOKENS)
        return Sampling(
            temperature=c.judge_temperature if c.judge_temperature is not None else default_temperature,
            top_p=1.0,
            max_tokens=c.judge_max_tokens or default_max_tokens,
            seed=derive_seed(c.seed, "judge", *key),
        )

    async def _call(self, role: str, purpose: str, request: Request) -> Result:
        result = await self.roles[role](purpose, request)
        if not result.ok:
            raise _Failed(f"{purpose}: {result.error}")
        return result

    async def answer(self, item: EvalItem, role: str) -> list[str]:
        """The answers to every turn of `item` (turn 2 sees the conversation so far, as in MT-Bench)."""
        purpose = "eval_answer" if role == "model" else "eval_reference"
        turns = item.turns if self.kind == "mtbench" else item.turns[:1]
        messages: list[dict[str, str]] = []
        answers: list[str] = []
        for turn, question in enumerate(turns):
            # A model trained by `evolinstruct train` in the paper's format carries that format as its chat
            # template, so a plain user message reaches it exactly as it was trained.
            messages = [*messages, {"role": "user", "content": question}]
            result = await self._call(role, purpose, Request(messages, self.answer_sampling(item, role, turn)))
            answers.append(result.text.strip())
            messages = [*messages, {"role": "assistant", "content": answers[-1]}]
        return answers

    # ------------------------------------------------------------------ one question
    async def pairwise(self, item: EvalItem, model: list[str], reference: list[str]) -> dict[str, Any]:
        prompt = self.pair_prompts[judge_category(item.skill)]
        if self.config.position == "swap":
            orders = [True, False]  # model as Assistant 1, then as Assistant 2
        else:
            orders = [item.position % 2 == 1]  # the paper: the model first on odd ids, second on even ids
        verdicts = []
        for model_first in orders:
            first, second = (model[0], reference[0]) if model_first else (reference[0], model[0])
            request = Request(
                prompt.messages(item.question, first, second),
                self.judge_sampling(prompt.temperature, prompt.max_tokens, item.id, "model_first" if model_first else "model_second"),
                guide=PAIR_HEAD if self.guided else None,
            )
            verdicts.append((model_first, (await self._call("judge", "eval_judge", request)).text))
        return {"prompt": prompt.category, **combine_pairwise(verdicts, guided=self.guided)}

    async def single(self, item: EvalItem, model: list[str], reference: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {"turns_graded": []}
        for turn in range(min(2, len(item.turns))):
            grades = {}
            for role, answers in (("model", model), ("reference", reference)):
                name, messages = mtbench_judge_messages(self.single_prompts, item, answers, turn)
                request = Request(
                    messages,
                    self.judge_sampling(MTBENCH_JUDGE["temperature"], MTBENCH_JUDGE["max_tokens"], item.id, role, turn),
                    guide=RATING_HEAD if self.guided else None,
                )
                text = (await self._call("judge", "eval_judge", request)).text
                grades[role] = {"prompt": name, "rating": parse_rating(text), "verdict": text}
            out["turns_graded"].append(grades)
        graded = out["turns_graded"]
        out["unparsed"] = sum(1 for t in graded for g in t.values() if g["rating"] is None)
        out["n_verdicts"] = 2 * len(graded)
        model_ratings = [t["model"]["rating"] for t in graded]
        ref_ratings = [t["reference"]["rating"] for t in graded]
        # A question's score is the mean over its turns; a turn whose grade did not parse on either side is left out.
        pairs = [(m, r) for m, r in zip(model_ratings, ref_ratings, strict=True) if m is not None and r is not None]
        out["model_score"] = sum(m for m, _ in pairs) / len(pairs) if pairs else None
        out["reference_score"] = sum(r for _, r in pairs) / len(pairs) if pairs else None
        return out

    async def run_item(self, item: EvalItem) -> dict[str, Any]:
        row: dict[str, Any] = {"id": item.id, "skill": item.skill, "difficulty": item.difficulty, "turns": item.turns}
        try:
            model, reference = await asyncio.gather(self.answer(item, "model"), self.answer(item, "reference"))
            row["model_answer"], row["reference_answer"] = model, reference
            judged = await (self.pairwise(item, model, reference) if self.kind == "pairwise" else self.single(item, model, reference))
            row.update(judged)
            self.progress.unparsed += row["unparsed"]
        except _Failed as exc:
            row["error"] = str(exc)
            self.progress.failed += 1
        self.progress.done += 1
        self.on_item(self.progress)
        return row


def combine_pairwise(verdicts: list[tuple[bool, str]], guided: bool = False) -> dict[str, Any]:
    """Each side's score from one or two verdicts: (model shown first?, judge text) -> the mean over parsed ones.

    A guided verdict is read from its head only: the free text after it may mention other numbers.
    """
    model_scores, reference_scores, parsed = [], [], []
    for model_first, text in verdicts:
        scores = parse_head_scores(text) if guided else parse_pair_scores(text)
        parsed.append({"model_first": model_first, "verdict": text, "scores": list(scores) if scores else None})
        if scores is None:
            continue
        model_score, reference_score = scores if model_first else (scores[1], scores[0])
        model_scores.append(model_score)
        reference_scores.append(reference_score)
    consistent = None
    if len(model_scores) == 2:  # both orders parsed: does the judge pick the same winner either way?
        consistent = _sign(model_scores[0] - reference_scores[0]) == _sign(model_scores[1] - reference_scores[1])
    return {
        "verdicts": parsed,
        "n_verdicts": len(parsed),
        "unparsed": sum(1 for p in parsed if p["scores"] is None),
        "model_score": sum(model_scores) / len(model_scores) if model_scores else None,
        "reference_score": sum(reference_scores) / len(reference_scores) if reference_scores else None,
        "position_consistent": consistent,
    }


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _label(spec: ModelSpec, backend: Backend) -> str:
    """An in-process model by its name; a served one with its backend, since the name alone is ambiguous."""
    return backend.model if capabilities(backend).in_process else f"{backend.model} ({spec.backend})"


async def _eval_async(config: EvalConfig, out: Path, on_start: Callable[[int, bool], None], on_item: Callable[[EvalProgress], None]) -> dict[str, Any]:
    started = time.perf_counter()
    kind, items = load_testset(config.testset, config.data_dir, None)
    digest = file_digest(str(data_file(BUILTIN[config.testset], config.data_dir) if config.testset in BUILTIN else config.testset))
    items = spread_over_skills(items, config.limit)
    transport = Transport(concurrency=config.concurrency, request_timeout=config.request_timeout,
                          max_retries=config.max_retries)  # checked before EVAL_DIR is made
    store = RunStore(out)
    backends = Backends(transport, lazy=True)  # a resumed eval whose calls are stored loads no model
    try:
        resumed = store.bind_config(config.bound(digest))
        counters = CallCounters()
        budget = Budget(max_calls=config.max_calls)
        slots = PrioritySlots(config.concurrency)
        specs = {"model": config.model, "reference": config.reference, "judge": config.judge}
        collector = _collector(config, store, transport, budget) if config.batch else None
        if collector is None:
            roles = {role: CachedLLM(backends.get(spec), store, counters, budget, slots) for role, spec in specs.items()}
        else:  # every item at once; a round goes when every item waits on its calls
            slots = PrioritySlots(1 << 30)
            roles = {role: CachedLLM(BatchBackend(collector, spec.backend, spec.model or ""), store, counters, budget,
                                     slots) for role, spec in specs.items()}
        evaluation = Evaluation(config, kind, roles, on_item)
        evaluation.progress.total = len(items)
        on_start(len(items), resumed)
        if collector is None:
            rows = await asyncio.gather(*(evaluation.run_item(item) for item in items))
        else:
            try:
                await collector.recover()
                rows = await asyncio.gather(*(_in_chain(collector, n, evaluation.run_item(item))
                                              for n, item in enumerate(items)))
            finally:
                await collector.aclose()
        elapsed = time.perf_counter() - started
        labels = {role: _label(spec, backends.get(spec)) for role, spec in specs.items()}
        results = build_results(config, kind, rows, labels)
        results["calls"] = {
            "sent": sum(counters.sent.values()),
            "cache_hits": sum(counters.cache_hits.values()),
            "failed": sum(counters.failed.values()),
            "by_purpose": counters.as_dict(),
        }
        results["resumed"] = resumed
        results["seconds"] = round(elapsed, 3)
        write_eval_outputs(out, rows, results)
        return results
    finally:
        await backends.aclose()
        store.close()


def _collector(config: EvalConfig, store: RunStore, transport: Transport, budget: Budget) -> BatchCollector:
    """--batch: one provider endpoint for the model, the reference and the judge."""
    specs = (config.model, config.reference, config.judge)
    if any(not spec.model for spec in specs):
        raise ValueError("--batch needs a served model for every role (the model, --reference and --judge)")
    if len({(spec.base_url, spec.api_key_env) for spec in specs}) > 1:
        raise ValueError("--batch sends every role's calls to one endpoint: give the roles the same --base-url")
    api = build_batch_api(config.batch or "", config.model, transport)
    collector = BatchCollector(api, store, poll=config.batch_poll, max_requests=config.batch_max_requests,
                               max_retries=config.max_retries, budget=budget)
    collector.feeding = False  # every item is started at once
    return collector


async def _in_chain(collector: BatchCollector, n: int, work: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    with collector.chain(n):
        return await work


def spread_over_skills(items: list[EvalItem], limit: int | None) -> list[EvalItem]:
    """The first `limit` questions taken round-robin over skills, in file order within each skill.

    The test sets are sorted by skill, so a plain head would test one skill; this way `--limit 29`
    asks one question of every WizardLM skill. Without a limit every question is used, in file order.
    """
    if not limit or limit >= len(items):
        return items
    rank: dict[str, int] = {}
    keyed = []
    for item in items:
        rank[item.skill] = rank.get(item.skill, -1) + 1
        keyed.append((rank[item.skill], item.position, item))
    chosen = sorted(keyed, key=lambda k: (k[0], k[1]))[:limit]
    return [item for _, _, item in sorted(chosen, key=lambda k: k[1])]


def build_results(config: EvalConfig, kind: str, rows: list[dict[str, Any]], labels: dict[str, str]) -> dict[str, Any]:
    scored = [
        Scored(row["id"], row["skill"], row["difficulty"], row.get("model_score"), row.get("reference_score"))
        for row in rows if "error" not in row
    ]
    results: dict[str, Any] = {
        "model": labels["model"],
        "reference": labels["reference"],
        "judge": labels["judge"],
        "testset": config.testset if config.testset in BUILTIN else Path(config.testset).name,
        "mode": "single" if kind == "mtbench" else "pairwise",
        "position": config.position if kind == "pairwise" else None,
        **summarize(scored, config.bootstrap, config.seed),
        "unparsed": sum(row.get("unparsed", 0) for row in rows),
        "verdicts": sum(row.get("n_verdicts", 0) for row in rows),
        "failed_items": sum(1 for row in rows if "error" in row),
        "settings": {
            "temperature": config.temperature,
            "top_p": config.top_p,
            "max_tokens": config.max_tokens,
            "seed": config.seed,
            "reference_seed": config.reference_seed if config.reference_seed is not None else config.seed + 1,
            "judge_temperature": config.judge_temperature,
            "judge_max_tokens": config.judge_max_tokens,
            "judge_guide": "on" if config.guided() else "off",
            "defaults": "mtbench: FastChat (per-category temperature, 1024 tokens; judge 0, 2048)" if kind == "mtbench"
            else "WizardLM inference (temperature 1, top-p 0.9, 2048 tokens); judge: FastChat reviewer (0.2, 1024)",
        },
    }
    if kind == "pairwise":
        pairs = [row["position_consistent"] for row in rows if row.get("position_consistent") is not None]
        results["position_consistency"] = {"pairs": len(pairs), "consistent": sum(pairs)}
    else:
        results["turns"] = _mtbench_turns(rows)
    return results


def _mtbench_turns(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean rating per turn for each side (MT-Bench reports turn 1, turn 2 and their mean)."""
    out = []
    for turn in range(2):
        ratings: dict[str, list[float]] = {"model": [], "reference": []}
        for row in rows:
            grades = row.get("turns_graded") or []
            if len(grades) > turn:
                for role in ratings:
                    if grades[turn][role]["rating"] is not None:
                        ratings[role].append(grades[turn][role]["rating"])
        out.append({"turn": turn + 1, **{f"{role}_score": (sum(v) / len(v) if v else None) for role, v in ratings.items()},
                    "n": min(len(v) for v in ratings.values())})
    return out


def write_eval_outputs(out: Path, rows: list[dict[str, Any]], results: dict[str, Any]) -> None:
    answer_keys = ("id", "skill", "difficulty", "turns", "model_answer", "reference_answer", "error")
    with open(out / ANSWERS, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps({k: row[k] for k in answer_keys if k in row}, ensure_ascii=False) + "\n")
    with open(out / JUDGMENTS, "w", encoding="utf-8") as f:
        for row in rows:
            judged = {k: v for k, v in row.items() if k not in ("turns", "model_answer", "reference_answer")}
            f.write(json.dumps(judged, ensure_ascii=False) + "\n")
    write_json(out / RESULTS, results)


def run_eval(
    config: EvalConfig,
    out: str | Path,
    on_start: Callable[[int, bool], None] | None = None,
    on_item: Callable[[EvalProgress], None] | None = None,
) -> dict[str, Any]:
    return asyncio.run(_eval_async(config, Path(out), on_start or (lambda _n, _r: None), on_item or (lambda _p: None)))
