"""What a run will cost before it runs: calls by purpose, tokens, cost and time, as (low, high) ranges.

Nothing is sent and nothing is written: the seeds are read, the real prompts are rendered with the run's
template set and counted, and a RUN_DIR that already holds a store is read (read-only) for what it has
observed. `estimate_evolve` plans an evolve run, `estimate_score` a score run, `estimate_eval` an eval run
(its own rules are in its docstring). docs/EXPORT.md
("--estimate") explains every number; in short:

Calls, for N seeds and E epochs (one chain per seed, one evolution per chain per epoch):
- answer: the seeds' answers (none for a seed whose output is kept with `--seed-responses keep`), plus
  one per evolution that reaches the answer step;
- evolve: N x E, exactly;
- equality: one per evolution that passes the cheap rules (none with `--no-equality-check`).
The shares of evolutions that reach the judge and the answer come from the store when it holds finished
evolutions (rule by rule, with a margin of two standard errors, at least 2 points), else from an assumed
elimination rate r = DEFAULT_ELIMINATION_RATE: the high end assumes nothing is eliminated (the ceiling: no
run sends more), the low end that a share r is eliminated, all of it before the judge call. A model weaker
than that (the embedded 135M model) eliminates more and sends fewer calls than the low end.

Prompt tokens: counted with the role's own tokenizer when it is on this machine (the embedded model's via
quality.score.heuristics.TokenCounter, a local model directory's tokenizer.json, or a hub model's cached
one), else approximated as characters / 4 (OpenAI's rule of thumb for English). Every message adds
MESSAGE_TOKENS and every request REPLY_TOKENS (chat-template markers). Epoch-1 prompts are exact up to a
token or two per prompt: the seed's own operation (drawn as the run draws it) and its instruction are
counted apart and added. Later epochs' instructions do not exist yet: an instruction grows by the observed
mean growth of kept evolutions, else by DEFAULT_GROWTH_TOKENS (the in-depth prompts ask for "10 to 20 words"
more), times the share of evolutions kept; their operations follow the weights' mix.

Completion tokens per call: high = --max-tokens (--judge-max-tokens for the judge), the ceiling; low =
the store's observed mean for the purpose, else the evolved instruction's expected length (evolve),
DEFAULT_JUDGE_TOKENS (equality), and the seed file's outputs' mean length or DEFAULT_ANSWER_TOKENS (answer).

Cost: the --prices table (USD per 1M tokens) by each role's model; batch prices are the model's "batch"
entry ({"input": ..., "output": ...}) when the table has one, else BATCH_DISCOUNT of the online price.
Time: calls / concurrency x latency, never less than one chain's calls in a row x latency; the latency is
given, or measured as the store's calls over its `seconds_total` (that run's throughput, at its
concurrency). Calls already in the store are replayed, not sent: tokens, cost and time count the rest.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from ..calls import BATCH_DISCOUNT, load_prices, mode_price
from ..models.base import ModelSpec, Request, capabilities
from ..models.registry import backend_class
from ..models.spec import is_embedded
from ..records import file_digest, join_input, seed_record_id
from ..rundir import STORE_FILE, RunDir
from ..seeds import SeedColumns, read_seeds
from ..store import RunStore
from .config import EvolveConfig
from .executor import shard_of
from .operations import choose_data_format, choose_operation, parse_weights
from .rules import COPIED_PROMPT, EMPTY, NO_INFORMATION_GAIN, TRUNCATED
from .tasks import get_task
from .templates import TemplateSet, load_templates

if TYPE_CHECKING:
    from ..evaluate.runner import EvalConfig

EVOLVE_PURPOSES = ("answer", "evolve", "equality")
# The share of evolutions assumed eliminated when the store has observed none. The issue that asked for the
# estimate gives it for round 1 on a weak model ("about 50% fail the equality check"); the paper's own run
# with ChatGPT kept far more (52K Alpaca seeds, 4 epochs: 250K instructions, so about 4% of the 208K
# evolutions were eliminated), which is why the high end of the call range assumes no elimination at all.
DEFAULT_ELIMINATION_RATE = 0.5
CHEAP_REASONS = frozenset({EMPTY, COPIED_PROMPT, TRUNCATED})  # eliminated before the judge call
CHARS_PER_TOKEN = 4.0
MESSAGE_TOKENS = 4  # per chat message: role markers and separators (ChatML-like templates)
REPLY_TOKENS = 3  # per request: the assistant header that opens the reply
DEFAULT_GROWTH_TOKENS = 20.0  # per kept evolution: "10 to 20 words" more, about 1.3 tokens a word
DEFAULT_JUDGE_TOKENS = 3.0  # "Not Equal"
DEFAULT_ANSWER_TOKENS = 200.0  # an answer's length when neither the store nor the seed file shows one
MARGIN_SE = 2.0  # observed shares are widened by two standard errors...
MARGIN_MIN = 0.02  # ...and at least two points
GROWTH_SAMPLE = 500  # kept evolutions whose growth is counted with the tokenizer (the first ones in the store)
GROWTH_PROMPTS = 20_000  # prompts held to find those evolutions' parents
SEED_FILE_MODEL = "seed-file"  # a seed whose output was kept from the seed file (chain.py) had no answer call

Range = tuple[float, float]


# ------------------------------------------------------------------------------------------ token counting
class TokenCount(Protocol):
    name: str

    def count(self, text: str) -> float: ...


class CharCounter:
    """The documented approximation: characters / 4."""

    name = "chars/4"

    def count(self, text: str) -> float:
        return len(text) / CHARS_PER_TOKEN


class FileCounter:
    """A model's own tokenizer.json, read with the `tokenizers` library."""

    def __init__(self, path: str | Path, name: str) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(path))
        self.name = name

    def count(self, text: str) -> float:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids) if text else 0


def _hub_cached_tokenizer(repo_id: str) -> str | None:
    """A hub model's tokenizer.json when it is already in the local cache; never a download."""
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(repo_id, "tokenizer.json")
    except Exception:  # no huggingface_hub, or not a repo id: the approximation counts
        return None
    return path if isinstance(path, str) else None


def counter_for(spec: ModelSpec) -> TokenCount:
    """The tokenizer of a role's model when this machine has it, else characters / 4."""
    if is_embedded(spec):
        from ..quality.score.heuristics import TokenCounter

        counter = TokenCounter()
        return counter if counter.name != "regex-words" else CharCounter()  # not installed: approximate
    model = spec.model or ""
    local = Path(model) / "tokenizer.json" if model else None
    try:
        if local is not None and local.is_file():
            return FileCounter(local, model)
        if model.count("/") == 1 and not Path(model).exists() and (cached := _hub_cached_tokenizer(model)):
            return FileCounter(cached, model)
    except Exception:  # an unreadable tokenizer file: the approximation still counts
        pass
    return CharCounter()


def stored_model_name(spec: ModelSpec) -> str:
    """The name a role's calls are stored and priced under (the embedded model's id for in-process ones)."""
    cls = backend_class(spec.backend)
    if capabilities(cls).in_process and hasattr(cls, "display_name"):
        return cls.display_name(spec.model)
    return spec.model or spec.label


def overhead(messages: int) -> int:
    return messages * MESSAGE_TOKENS + REPLY_TOKENS


# ------------------------------------------------------------------------------------------ the estimate
@dataclass(slots=True)
class PurposeEstimate:
    """One purpose's calls (the whole run) and, for the calls still to send, its tokens and cost."""

    purpose: str
    model: str
    calls: Range  # the whole run's: the finished steps' calls (exact) plus the rest's (a range)
    stored: int = 0  # calls of this purpose already in the store: replayed, never sent again
    to_send: Range = (0.0, 0.0)  # what a run of the same command sends now
    prompt_tokens: Range = (0.0, 0.0)
    completion_tokens: Range = (0.0, 0.0)
    completion_per_call: Range = (0.0, 0.0)
    completion_source: str = ""
    cost_online: Range | None = None
    cost_batch: Range | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "calls": _ints(self.calls),
            "stored": self.stored,
            "to_send": _ints(self.to_send),
            "prompt_tokens": _ints(self.prompt_tokens),
            "completion_tokens": _ints(self.completion_tokens),
            "completion_tokens_per_call": [round(v, 1) for v in self.completion_per_call],
            "completion_source": self.completion_source,
        }
        if self.cost_online is not None:
            out["cost_online"] = _usd(self.cost_online)
            out["cost_batch"] = _usd(self.cost_batch or (0.0, 0.0))
        return out


@dataclass(slots=True)
class Estimate:
    """A run's plan. Calls are the whole run's; tokens, cost and time are the calls still to send."""

    command: str
    items: int  # seeds (evolve) or records (score)
    epochs: int
    by_purpose: dict[str, PurposeEstimate]
    concurrency: int
    tokenizers: dict[str, str]
    elimination_rate: float | None = None
    elimination_source: str = ""
    shares: dict[str, Range] = field(default_factory=dict)  # evolve: evolutions reaching the judge / the answer
    growth_tokens: float | None = None
    growth_source: str = ""
    chain_calls: Range = (0.0, 0.0)  # calls one lineage makes in a row (the floor of the time)
    latency: float | None = None
    latency_source: str = ""
    time_s: Range | None = None
    currency: str = "USD"
    batch_source: str = ""
    store_matches: bool | None = None  # None: no store; False: the store holds a run with other settings
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def calls(self) -> dict[str, Range]:
        return {p: e.calls for p, e in self.by_purpose.items()}

    @property
    def total_calls(self) -> Range:
        return _sum(e.calls for e in self.by_purpose.values())

    @property
    def calls_to_send(self) -> Range:
        return _sum(e.to_send for e in self.by_purpose.values())

    @property
    def prompt_tokens(self) -> Range:
        return _sum(e.prompt_tokens for e in self.by_purpose.values())

    @property
    def completion_tokens(self) -> Range:
        return _sum(e.completion_tokens for e in self.by_purpose.values())

    @property
    def cost_online(self) -> Range | None:
        costs = [e.cost_online for e in self.by_purpose.values() if e.cost_online is not None]
        return _sum(costs) if costs else None

    @property
    def cost_batch(self) -> Range | None:
        costs = [e.cost_batch for e in self.by_purpose.values() if e.cost_batch is not None]
        return _sum(costs) if costs else None

    def to_dict(self) -> dict[str, Any]:
        """The estimate as stats.json keeps it (next to the actual numbers)."""
        out: dict[str, Any] = {
            "command": self.command,
            "items": self.items,
            "epochs": self.epochs,
            "calls": _ints(self.total_calls),
            "calls_to_send": _ints(self.calls_to_send),
            "prompt_tokens": _ints(self.prompt_tokens),
            "completion_tokens": _ints(self.completion_tokens),
            "by_purpose": {p: e.to_dict() for p, e in self.by_purpose.items()},
            "concurrency": self.concurrency,
            "tokenizers": self.tokenizers,
            "chain_calls": [round(v, 2) for v in self.chain_calls],
            "seconds": round(self.seconds, 3),
        }
        if self.elimination_rate is not None:
            out["elimination_rate"] = round(self.elimination_rate, 4)
            out["elimination_source"] = self.elimination_source
            out["shares"] = {k: [round(v, 4) for v in r] for k, r in self.shares.items()}
        if self.growth_tokens is not None:
            out["growth_tokens_per_epoch"] = round(self.growth_tokens, 1)
            out["growth_source"] = self.growth_source
        if self.cost_online is not None:
            out["cost_online"] = _usd(self.cost_online)
            out["cost_batch"] = _usd(self.cost_batch or (0.0, 0.0))
            out["batch_prices"] = self.batch_source
            out["currency"] = self.currency
        if self.time_s is not None:
            out["time_s"] = [round(v, 1) for v in self.time_s]
        if self.latency is not None:
            out["latency_s"] = round(self.latency, 4)
        if self.latency_source:
            out["latency_source"] = self.latency_source
        if self.store_matches is not None:
            out["store_matches_config"] = self.store_matches
        if self.notes:
            out["notes"] = list(self.notes)
        return out


def _sum(ranges: Iterable[Range]) -> Range:
    lo = hi = 0.0
    for a, b in ranges:
        lo, hi = lo + a, hi + b
    return (lo, hi)


def _ints(r: Range) -> list[int]:
    return [int(math.floor(r[0])), int(math.ceil(r[1]))]


def _usd(r: Range) -> list[float]:
    return [round(r[0], 4), round(r[1], 4)]


# ------------------------------------------------------------------------------------------ what a store shows
@dataclass(slots=True)
class Observed:
    """What a RUN_DIR's store has seen: evolution outcomes, calls, completion means, growth, throughput."""

    attempted: int = 0  # finished evolutions (kept or eliminated; one that failed a call is not finished)
    judged: int = 0  # of which reached the equality judge
    answered: int = 0  # of which reached the answer
    eliminated: int = 0
    cheap: int = 0  # eliminated by a rule before the judge
    judged_out: int = 0  # eliminated by the judge
    seeds_answered: int = 0  # finished seeds whose answer was a call (not kept from the seed file)
    stored: dict[str, int] = field(default_factory=dict)
    completion_mean: dict[str, float] = field(default_factory=dict)
    growth_tokens: float | None = None
    growth_samples: int = 0
    seconds_total: float = 0.0
    matches: bool = False


def observe(run_dir: Path, bound: dict[str, Any] | None, growth_counter: TokenCount | None) -> Observed | None:
    """Read a RUN_DIR's store read-only; None when there is none (nothing is created)."""
    if not (Path(run_dir) / STORE_FILE).is_file():
        return None
    store = RunStore(run_dir, readonly=True)
    try:
        seen = Observed(matches=bound is not None and store.get_meta("config") == bound)
        for purpose, totals in store.call_totals().items():
            seen.stored[purpose] = totals["calls"]
            if totals["calls"]:
                seen.completion_mean[purpose] = totals["completion_tokens"] / totals["calls"]
        seen.seconds_total = float(store.get_meta("seconds_total") or 0.0)
        prompts: dict[str, str] = {}  # for the growth sample: the first records' prompts by id
        pairs: list[tuple[str, str]] = []
        for row in store.iter_record_dicts():
            status, meta = row["status"], row.get("meta") or {}
            if status == "error":
                continue  # its failed call is retried: not finished
            text = join_input(row["instruction"], row.get("input", ""), "\n")
            if len(prompts) < GROWTH_PROMPTS and (row["epoch"] == 0 or status == "kept"):
                prompts[row["id"]] = text
            if row["epoch"] == 0:
                seen.seeds_answered += row.get("model") != SEED_FILE_MODEL
                continue
            seen.attempted += 1
            seen.eliminated += status == "eliminated"
            reason = row.get("reason")
            seen.cheap += reason in CHEAP_REASONS
            seen.judged_out += reason == NO_INFORMATION_GAIN
            if "equality_judge" in meta or reason == NO_INFORMATION_GAIN:
                seen.judged += 1
            if status == "kept" or (reason not in CHEAP_REASONS and reason != NO_INFORMATION_GAIN):
                seen.answered += 1
            if status == "kept" and len(pairs) < GROWTH_SAMPLE and row.get("parent_id") in prompts:
                pairs.append((prompts[row["parent_id"]], text))
        if pairs and growth_counter is not None:
            seen.growth_tokens = sum(growth_counter.count(b) - growth_counter.count(a) for a, b in pairs) / len(pairs)
            seen.growth_samples = len(pairs)
        return seen
    finally:
        store.close()


def _observed_shares(seen: Observed, judge_on: bool) -> tuple[float, Range, Range]:
    """The elimination rate and the shares of evolutions that reach the judge and the answer, stage by stage.

    Each stage's rate is taken over the calls that reached it, never over finished evolutions alone: when a
    run stops part-way, the evolutions eliminated early have finished while the kept ones still wait for
    their answers, and finished evolutions alone would overstate the elimination rate (55% against the true
    31% in a half-done run of tests/test_estimate.py). Every evolve (judge) call in the store has been
    through the cheap rules (the judge), which take no further call, so its verdict is in the records."""
    evolved = max(seen.stored.get("evolve", 0), seen.attempted)
    cheap = seen.cheap / evolved
    judged = max(seen.stored.get("equality", 0), seen.judged)
    judged_out = seen.judged_out / judged if judged else 0.0
    answered = seen.answered
    response_out = (seen.eliminated - seen.cheap - seen.judged_out) / answered if answered else 0.0
    rate = 1 - (1 - cheap) * (1 - judged_out) * (1 - response_out)
    reach_judge = _complement(_share(seen.cheap, evolved))
    passed = _complement(_share(seen.judged_out, judged)) if judged else (1.0, 1.0)
    if not judge_on:
        passed = (1.0, 1.0)
    return rate, reach_judge, (reach_judge[0] * passed[0], reach_judge[1] * passed[1])


def _complement(r: Range) -> Range:
    return (1.0 - r[1], 1.0 - r[0])


def _share(hits: int, n: int) -> Range:
    """An observed share with a margin of two standard errors (at least two points), within [0, 1]."""
    p = hits / n
    margin = max(MARGIN_MIN, MARGIN_SE * math.sqrt(p * (1 - p) / n))
    return (max(0.0, p - margin), min(1.0, p + margin))


# ------------------------------------------------------------------------------------------ prices and time
def _price(prices: dict[str, dict[str, Any]], model: str) -> dict[str, Any] | None:
    return prices.get(model) or prices.get("*")


def _apply_prices(purposes: Iterable[PurposeEstimate], prices: dict[str, dict[str, Any]], notes: list[str]) -> str:
    """Online and batch cost of each purpose; returns where the batch prices came from."""
    sources = set()
    for e in purposes:
        price = _price(prices, e.model)
        if price is None:
            notes.append(f"no price for {e.model} in the price table: its calls count as free")
            price = {}
        batch = mode_price(price, "batch")  # the run's own rule (calls.py): "batch" prices, a factor, or 50%
        given = price.get("batch")
        if isinstance(given, dict):
            sources.add("the table's batch prices")
        elif isinstance(given, int | float):
            sources.add(f"{float(given):.0%} of online (the table's batch factor)")
        else:
            sources.add(f"{BATCH_DISCOUNT:.0%} of online (no batch entry)")

        def cost(p: dict[str, Any], i: int, e: PurposeEstimate = e) -> float:
            return (e.prompt_tokens[i] * float(p.get("input", 0.0)) + e.completion_tokens[i] * float(p.get("output", 0.0))) / 1e6

        e.cost_online = (cost(price, 0), cost(price, 1))
        e.cost_batch = (cost(batch, 0), cost(batch, 1))
    return "; ".join(sorted(sources))


def _time(to_send: Range, chain_calls: Range, concurrency: int, latency: float) -> Range:
    """Calls spread over the concurrency, but never faster than one chain's calls in a row."""
    if to_send[1] <= 0:
        return (0.0, 0.0)
    return (max(to_send[0] * latency / concurrency, chain_calls[0] * latency if to_send[0] > 0 else 0.0),
            max(to_send[1] * latency / concurrency, chain_calls[1] * latency))


def _finish(est: Estimate, prices_path: str | None, latency: float | None, seen: Observed | None,
            purposes: tuple[str, ...], started: float, measured_over: str = "the store's") -> Estimate:
    prices = load_prices(prices_path)
    if prices:
        est.batch_source = _apply_prices(est.by_purpose.values(), prices, est.notes)
    to_send = est.calls_to_send
    if latency is not None:
        est.latency, est.latency_source = latency, "given"
        est.time_s = _time(to_send, est.chain_calls, est.concurrency, latency)
    elif seen is not None and seen.seconds_total > 0 and sum(seen.stored.get(p, 0) for p in purposes) > 0:
        rate = sum(seen.stored.get(p, 0) for p in purposes) / seen.seconds_total
        est.latency_source = (f"measured: {rate:.2f} calls/s over {measured_over} {seen.seconds_total:.0f} s "
                              "(that run's throughput at its own concurrency)")
        est.time_s = (to_send[0] / rate, to_send[1] / rate)
    else:
        est.latency_source = "unknown: give a latency (seconds per call) for a time range"
    est.seconds = time.perf_counter() - started
    return est


# ------------------------------------------------------------------------------------------ evolve
def _template_tokens(templates: TemplateSet, counter: TokenCount) -> dict[tuple[str, str | None], float]:
    """Every evolving prompt's own tokens (its text without the instruction, the system prompt, the markers)."""
    out = {}
    for op in templates.ops:
        for fmt in templates.data_formats(op) or [None]:
            messages = templates.messages(templates.render(op, "", fmt))
            out[(op, fmt)] = sum(counter.count(m["content"]) for m in messages) + overhead(len(messages))
    return out


def _mix(weights: dict[str, float], tokens: dict[tuple[str, str | None], float]) -> float:
    """The weights' expected template tokens (formats drawn uniformly, as the chain draws them)."""
    total = sum(weights.values())
    mixed = 0.0
    for op, w in weights.items():
        per_format = [v for (o, _f), v in tokens.items() if o == op]
        mixed += w / total * sum(per_format) / len(per_format)
    return mixed


def estimate_evolve(
    config: EvolveConfig, run_dir: str | Path | None = None, latency: float | None = None
) -> Estimate:
    """Plan an evolve run of `config` (into `run_dir`, whose store, if any, is read for observations)."""
    started = time.perf_counter()
    a, s, p, roles = config.algorithm, config.source, config.sampling, config.roles
    templates = load_templates(a.template_set)
    task = get_task(a.task)
    weights = parse_weights(a.op_weights or (task.op_weights if templates.name == task.templates else None), templates)
    judge_on = a.equality_check and task.rules(config).equality
    specs = {"answer": roles.answer, "evolve": roles.evolver, "equality": roles.equality}
    counters: dict[tuple[Any, ...], TokenCount] = {}
    role_counter: dict[str, TokenCount] = {}
    for purpose, spec in specs.items():
        key = (spec.backend, spec.model)
        if key not in counters:
            counters[key] = counter_for(spec)
        role_counter[purpose] = counters[key]
    distinct = list({id(c): c for c in role_counter.values()}.values())
    ans_c, evo_c, eq_c = role_counter["answer"], role_counter["evolve"], role_counter["equality"]
    template_tokens = _template_tokens(templates, evo_c)
    eq_template = eq_c.count(templates.render_equality("", "")) + overhead(1)

    # One pass over the seeds: exact epoch-1 prompts.
    columns = SeedColumns(instruction=s.column, input=s.input_column, conversations=task.conversations)
    ex = config.executor
    n = seed_answers = outputs = 0
    seed_prompt = {"answer": 0.0, "evolve": 0.0, "equality": 0.0}  # sums of the seeds' own tokens per role
    seed_answer_prompts = evolve_epoch1 = output_tokens = 0.0
    for seed in read_seeds(s.seeds, columns, s.limit):
        if ex.shards > 1 and shard_of(seed, ex.shards) != ex.shard:
            continue
        n += 1
        prompt = join_input(seed.instruction, seed.input, s.input_separator)
        counted = {id(c): c.count(prompt) for c in distinct}  # once per tokenizer, however many roles share it
        tokens = {purpose: counted[id(c)] for purpose, c in role_counter.items()}
        if seed.history:  # a conversation: answers see every earlier turn, the evolver sees them as context
            context = "\n".join(m["content"] for m in seed.history)
            extra = {id(c): c.count(context) for c in distinct}
            for purpose in ("answer", "evolve"):
                tokens[purpose] += extra[id(role_counter[purpose])]
        for purpose in seed_prompt:
            seed_prompt[purpose] += tokens[purpose]
        if seed.output.strip():
            outputs += 1
            output_tokens += ans_c.count(seed.output)
        if not (a.seed_responses == "keep" and seed.output.strip()):
            seed_answers += 1
            seed_answer_prompts += tokens["answer"] + overhead(1)
        # MT-Bench rows: each earlier turn without an answer is answered first (at most this prompt's size).
        missing = sum(1 for m in seed.history if m["role"] == "assistant" and not m["content"].strip())
        seed_answers += missing
        seed_answer_prompts += missing * (tokens["answer"] + overhead(1))
        root_id = seed_record_id(seed.index, seed.instruction, seed.input)
        op = choose_operation(weights, a.seed, root_id, 1)
        formats = templates.data_formats(op)
        fmt = choose_data_format(formats, a.seed, root_id, 1) if formats else None
        evolve_epoch1 += template_tokens[(op, fmt)] + tokens["evolve"]
    if n == 0:
        raise ValueError(f"{s.seeds}: no seeds for this shard; nothing to estimate")

    # What the store has seen, when there is one. Its finished steps count as done only when it holds a run
    # of these very settings (`evolve` refuses any other); its rates are informative either way.
    bound = config.bound(templates, file_digest(s.seeds))
    seen = observe(Path(run_dir), bound, evo_c) if run_dir is not None else None
    notes: list[str] = []
    matches = seen.matches if seen is not None else None
    if seen is not None and not matches:
        notes.append(f"{run_dir} holds a run with other settings (`evolve` would refuse it): only its rates are used")
    done = seen if seen is not None and matches else Observed()
    if seen is not None and seen.attempted:
        r, reach_judge, reach_answer = _observed_shares(seen, judge_on)
        source = (f"observed in {Path(run_dir) / STORE_FILE} ({seen.eliminated} of {seen.attempted} finished "
                  "evolutions eliminated; each rule's rate over the calls that reached it)")
    else:
        r = DEFAULT_ELIMINATION_RATE
        reach_judge = reach_answer = (1.0 - r, 1.0)
        source = (f"assumed {r:.0%} (a weak model's round-1 rate; the paper's ChatGPT run eliminated about 4%): "
                  "the low end eliminates that share before the judge, the high end nothing")
    if not judge_on:
        reach_judge = (0.0, 0.0)
    keep_share = 1.0 - r
    if seen is not None and seen.growth_tokens is not None:
        growth = seen.growth_tokens
        growth_source = f"observed: mean growth of {seen.growth_samples} kept evolutions ({evo_c.name} tokens)"
    else:
        growth = DEFAULT_GROWTH_TOKENS
        growth_source = "assumed: the in-depth prompts' '10 to 20 words' more per kept evolution"

    # Later epochs: the instruction grows by `growth` per kept evolution; operations follow the weights.
    E = a.epochs
    mix = _mix(weights, template_tokens)
    mean = {purpose: total / n for purpose, total in seed_prompt.items()}

    def given(purpose: str, epoch: int) -> float:  # the instruction an epoch's evolution starts from
        return mean[purpose] + (epoch - 1) * growth * keep_share

    evolve_per_call = (evolve_epoch1 / n + sum(mix + given("evolve", k) for k in range(2, E + 1))) / E
    equality_per_call = sum(eq_template + 2 * given("equality", k) + growth for k in range(1, E + 1)) / E
    answer_evo_per_call = sum(given("answer", k) + growth + overhead(1) for k in range(1, E + 1)) / E
    answer_seed_per_call = seed_answer_prompts / seed_answers if seed_answers else 0.0
    evolved_tokens = sum(given("evolve", k) + growth for k in range(1, E + 1)) / E

    # Calls: the finished steps' (exact), plus the rest's at the shares above.
    left = max(0, n * E - done.attempted)  # evolutions still to run (one that failed a call runs again)
    seeds_left = max(0, seed_answers - done.seeds_answered)
    done_calls = {"answer": done.seeds_answered + done.answered, "evolve": done.attempted, "equality": done.judged}
    remaining = {
        "answer": (seeds_left + left * reach_answer[0], seeds_left + left * reach_answer[1]),
        "evolve": (float(left), float(left)),
        "equality": (left * reach_judge[0], left * reach_judge[1]),
    }

    def completion(purpose: str, fallback: float, fallback_source: str, ceiling: int) -> tuple[Range, str]:
        if seen is not None and purpose in seen.completion_mean:
            low, why = seen.completion_mean[purpose], f"observed mean of {seen.stored[purpose]} stored calls"
        else:
            low, why = fallback, fallback_source
        return (min(low, ceiling), float(ceiling)), f"low: {why}; high: the max tokens ({ceiling})"

    if outputs:
        answer_low, answer_why = output_tokens / outputs, f"mean length of the seed file's {outputs} outputs"
    else:
        answer_low, answer_why = DEFAULT_ANSWER_TOKENS, f"assumed {DEFAULT_ANSWER_TOKENS:.0f}"
    per_call = {
        "answer": completion("answer", answer_low, answer_why, p.max_tokens),
        "evolve": completion("evolve", evolved_tokens, "the evolved instruction's expected length", p.max_tokens),
        "equality": completion("equality", DEFAULT_JUDGE_TOKENS, f"assumed {DEFAULT_JUDGE_TOKENS:.0f} ('Not Equal')",
                               p.judge_max_tokens),
    }

    by_purpose: dict[str, PurposeEstimate] = {}
    for purpose in EVOLVE_PURPOSES:
        lo, hi = remaining[purpose]
        stored = done.stored.get(purpose, 0)
        # Stored calls of steps that did not finish (a run killed or stopped mid-step) are replayed, not sent.
        orphans = max(0, stored - done_calls[purpose])
        to_send = (max(0.0, lo - orphans), max(0.0, hi - orphans))
        est = PurposeEstimate(purpose, stored_model_name(specs[purpose]), (done_calls[purpose] + lo, done_calls[purpose] + hi),
                              stored=stored, to_send=to_send)
        if purpose == "answer":  # the seeds' answers come first in every chain
            def answer_prompts(k: float) -> float:
                return min(k, seeds_left) * answer_seed_per_call + max(0.0, k - seeds_left) * answer_evo_per_call

            est.prompt_tokens = (answer_prompts(to_send[0]), answer_prompts(to_send[1]))
        else:
            per = evolve_per_call if purpose == "evolve" else equality_per_call
            est.prompt_tokens = (to_send[0] * per, to_send[1] * per)
        (est.completion_per_call, est.completion_source) = per_call[purpose]
        est.completion_tokens = (to_send[0] * est.completion_per_call[0], to_send[1] * est.completion_per_call[1])
        by_purpose[purpose] = est

    # One chain's calls in a row: the floor of the time however high the concurrency.
    first = 1.0 if seeds_left else 0.0
    epochs_left = left / n
    chain = (first + epochs_left * (1 + reach_judge[0] + reach_answer[0]),
             first + epochs_left * (1 + reach_judge[1] + reach_answer[1]))
    est = Estimate(
        command="evolve", items=n, epochs=E, by_purpose=by_purpose, concurrency=config.transport.concurrency,
        tokenizers={purpose: c.name for purpose, c in role_counter.items()},
        elimination_rate=r, elimination_source=source,
        shares={"reach_judge": reach_judge, "reach_answer": reach_answer},
        growth_tokens=growth, growth_source=growth_source, chain_calls=chain, store_matches=matches, notes=notes,
    )
    if any(c.name == CharCounter.name for c in role_counter.values()):
        notes.append(f"prompt tokens approximated as characters / {CHARS_PER_TOKEN:g} where no tokenizer is on this machine")
    return _finish(est, config.budget.prices, latency, seen, EVOLVE_PURPOSES, started)


# ------------------------------------------------------------------------------------------ score
def estimate_score(
    run_dir: str | Path,
    options: Any,
    prices: str | None = None,
    latency: float | None = None,
) -> Estimate:
    """Plan `evolinstruct score RUN_DIR` with `options` (quality.score.run.ScoreOptions): one difficulty call
    per record, one ranking call per lineage of 2+ items; prompts rendered and counted as the scorers render
    them; completion tokens from the observed mean (low) and each call's max tokens (high)."""
    from ..quality.score.rankings import render_complexity, render_quality
    from ..quality.score.run import (
        DIFFICULTY_MAX_TOKENS,
        GUIDED_DIFFICULTY_MAX_TOKENS,
        GUIDED_RANK_TOKENS_PER_ITEM,
        LLM_SCORERS,
        PURPOSES,
        RANK_TOKENS_PER_ITEM,
        lineages,
        model_spec,
        resolve_guide,
        run_templates,
        select_records,
    )
    from .config import stored_separator

    started = time.perf_counter()
    run_dir = Path(run_dir)
    if not RunDir(run_dir).store.is_file():
        raise FileNotFoundError(f"{RunDir(run_dir).store}: no run store here; run `evolinstruct evolve ... -o {run_dir}` first")
    store = RunStore(run_dir, readonly=True)
    try:
        chosen = [s for s in options.scorers() if s in LLM_SCORERS]
        records = select_records(store, options.include_eliminated, options.limit)
        spec = model_spec(store, options) if chosen else None
        guided = bool(resolve_guide(options.guide, spec)) if spec is not None else False
        templates = run_templates(store) if chosen else None
        separator = stored_separator(store.get_meta("config") or {})
        totals = store.call_totals()
        seconds_total = float(store.get_meta("seconds_total") or 0.0)
    finally:
        store.close()
    counter = counter_for(spec) if spec is not None else CharCounter()
    model = stored_model_name(spec) if spec is not None else "-"
    by_purpose: dict[str, PurposeEstimate] = {}

    def prompt_of(r: Any) -> str:
        return join_input(r.instruction, r.input, separator)

    for scorer in chosen:
        purpose = PURPOSES[scorer]
        if scorer == "difficulty":
            assert templates is not None
            prompts = [templates.render_difficulty(prompt_of(r)) for r in records]
            ceilings = [options.max_tokens or (GUIDED_DIFFICULTY_MAX_TOKENS if guided else DIFFICULTY_MAX_TOKENS)] * len(prompts)
        else:
            prompts, ceilings = [], []
            per_item = GUIDED_RANK_TOKENS_PER_ITEM if guided else RANK_TOKENS_PER_ITEM
            for group in lineages(records):
                if scorer == "quality":
                    group = [r for r in group if r.output.strip()]
                if len(group) < 2:
                    continue
                if scorer == "complexity":
                    prompts.append(render_complexity([prompt_of(r) for r in group]))
                else:
                    prompts.append(render_quality([(prompt_of(r), r.output) for r in group]))
                ceilings.append(options.max_tokens or per_item * len(group) + 8)
        k = float(len(prompts))
        stored = totals.get(purpose, {}).get("calls", 0)
        send = max(0.0, k - stored)  # stored calls are replayed (a difficulty call per record, so a fair guess)
        est = PurposeEstimate(purpose, model, (k, k), stored=stored, to_send=(send, send))
        share = send / k if k else 0.0
        est.prompt_tokens = (share * sum(counter.count(t) + overhead(1) for t in prompts),) * 2
        ceiling = sum(ceilings) / len(ceilings) if ceilings else 0.0
        observed = totals.get(purpose)
        if observed and observed["calls"]:
            low = min(observed["completion_tokens"] / observed["calls"], ceiling)
            est.completion_source = f"low: observed mean of {observed['calls']} stored calls; high: the max tokens"
        else:
            low = ceiling
            est.completion_source = "the max tokens (no stored call to observe)"
        est.completion_per_call = (low, ceiling)
        est.completion_tokens = (send * low, send * ceiling)
        by_purpose[purpose] = est
    est = Estimate(command="score", items=len(records), epochs=0, by_purpose=by_purpose,
                   concurrency=options.concurrency, tokenizers={"score": counter.name}, chain_calls=(1.0, 1.0))
    if "heuristics" in options.scorers():
        est.notes.append("heuristics need no call")
    seen = Observed(stored={p: t["calls"] for p, t in totals.items()}, seconds_total=seconds_total)
    return _finish(est, prices, latency, seen, tuple(by_purpose), started)


# ------------------------------------------------------------------------------------------ eval
EVAL_PURPOSES = ("eval_answer", "eval_reference", "eval_judge")
EVAL_ROLE_PURPOSE = {"model": "eval_answer", "reference": "eval_reference", "judge": "eval_judge"}
# A verdict's length when the store has observed none: the scores line and a few sentences of explanation
# (FastChat's reviewer and MT-Bench's grader both ask for an explanation). Capped by the judge's max tokens.
DEFAULT_VERDICT_TOKENS = 100.0


def _offline_counter(spec: ModelSpec) -> TokenCount:
    """`counter_for`, except that the embedded model's tokenizer counts only when its converted checkpoint
    is already on this machine: `counter_for` would convert it first (loading the model), which an
    estimate never does. Otherwise characters / 4."""
    if not is_embedded(spec):
        return counter_for(spec)
    from ..models.embedded import EMBEDDED_ID, cache_dir

    path = cache_dir() / "models" / EMBEDDED_ID / "tokenizer.json"
    try:
        if path.is_file():
            return FileCounter(path, EMBEDDED_ID)
    except Exception:  # an unreadable tokenizer file: the approximation still counts
        pass
    return CharCounter()


def _message_tokens(counter: TokenCount, messages: list[dict[str, str]]) -> float:
    return sum(counter.count(m["content"]) for m in messages) + overhead(len(messages))


@dataclass(slots=True)
class _EvalCalls:
    """One purpose's planned calls: all of them, those the store answers, and the rest's tokens."""

    calls: int = 0
    stored: int = 0
    prompt: Range = (0.0, 0.0)
    completion: Range = (0.0, 0.0)
    ceilings: float = 0.0  # the max tokens of every planned call, summed (for the per-call ceiling)

    def add(self, stored: bool, prompt: Range, low: float, ceiling: int) -> None:
        self.calls += 1
        self.ceilings += ceiling
        if stored:
            self.stored += 1
            return
        self.prompt = (self.prompt[0] + prompt[0], self.prompt[1] + prompt[1])
        self.completion = (self.completion[0] + min(low, ceiling), self.completion[1] + ceiling)


def estimate_eval(
    config: EvalConfig,
    out_dir: str | Path | None = None,
    prices: str | None = None,
    latency: float | None = None,
) -> Estimate:
    """Plan `evolinstruct eval` with `config` (evaluate.runner.EvalConfig) into EVAL_DIR `out_dir`.

    The questions are chosen as the run chooses them (`load_testset`, `spread_over_skills`) and every
    request is built as `Evaluation` builds it (its sampling, max tokens, judge prompts and guide):
    - calls, exactly: per question one answer per turn from the model and from the reference (MT-Bench:
      both turns, the second seeing the first answer), then pairwise 2 judge calls with `--position swap`
      or 1 with `alternate`; MT-Bench one grading call per turn and side (2 turns x 2 sides);
    - stored: when EVAL_DIR/run.sqlite holds a run of these settings (read-only; `eval` refuses any other),
      each request's key is looked up as `CachedLLM` looks it up; a stored answer is read back, so the
      requests built on it (its second turn, its verdicts) are known and looked up too. Those calls are
      replayed, not sent: tokens, cost and time count the rest;
    - prompt tokens: the rendered prompts, counted with each role's tokenizer (`counter_for`; the embedded
      model's only when its converted checkpoint is here: nothing is converted or loaded), else characters
      / 4. An answer not written yet counts, inside a later prompt (a judge prompt, a second turn), as its
      low completion length at the low end and its max tokens at the high end;
    - completion tokens per call: high = the call's max tokens (`answer_sampling` / `judge_sampling`);
      low = the store's observed mean for the purpose, else DEFAULT_ANSWER_TOKENS (answers) and
      DEFAULT_VERDICT_TOKENS (verdicts), never above the max tokens;
    - time: calls / concurrency x latency, never less than one question's calls in a row (its answer turns,
      model and reference in parallel, then its judge calls one after the other) x latency; without a
      latency, the throughput of the last run into EVAL_DIR (results.json: calls sent over its seconds).
    """
    from ..evaluate.parsing import PAIR_HEAD, RATING_HEAD
    from ..evaluate.prompts import judge_category, mtbench_judge_messages
    from ..evaluate.runner import MTBENCH_JUDGE, RESULTS, Evaluation, spread_over_skills
    from ..evaluate.testsets import BUILTIN, data_file, load_testset
    from ..store import call_key

    started = time.perf_counter()
    kind, items = load_testset(config.testset, config.data_dir, None)
    items = spread_over_skills(items, config.limit)
    testset_file = data_file(BUILTIN[config.testset], config.data_dir) if config.testset in BUILTIN else config.testset
    bound = config.bound(file_digest(str(testset_file)))
    plan = Evaluation(config, kind, {}, lambda _p: None)  # its sampling and prompts; no role, no backend
    specs: dict[str, ModelSpec] = {"model": config.model, "reference": config.reference, "judge": config.judge}
    shared: dict[tuple[Any, ...], TokenCount] = {}
    counters: dict[str, TokenCount] = {}
    for role, spec in specs.items():
        key = (spec.backend, spec.model)
        if key not in shared:
            shared[key] = _offline_counter(spec)
        counters[role] = shared[key]
    names = {role: stored_model_name(spec) for role, spec in specs.items()}  # the models calls are keyed by

    out = Path(out_dir) if out_dir is not None else None
    notes: list[str] = []
    store = RunStore(out, readonly=True) if out is not None and (out / STORE_FILE).is_file() else None
    matches: bool | None = None
    totals: dict[str, dict[str, int]] = {}
    planned: dict[str, _EvalCalls] = {p: _EvalCalls() for p in EVAL_PURPOSES}
    seen_keys: set[str] = set()
    chain = 0
    try:
        if store is not None:
            matches = store.get_meta("config") == bound
            totals = store.call_totals()
            if not matches:
                notes.append(f"{out} holds an evaluation with other settings (`eval` would refuse it): "
                             "none of its calls is counted as stored")

        low: dict[str, float] = {}
        why: dict[str, str] = {}
        for role, fallback in (("model", DEFAULT_ANSWER_TOKENS), ("reference", DEFAULT_ANSWER_TOKENS),
                               ("judge", DEFAULT_VERDICT_TOKENS)):
            observed = totals.get(EVAL_ROLE_PURPOSE[role])
            if observed and observed["calls"]:
                low[role] = observed["completion_tokens"] / observed["calls"]
                why[role] = f"observed mean of {observed['calls']} stored calls"
            else:
                low[role], why[role] = fallback, f"assumed {fallback:.0f}"

        def lookup(role: str, request: Request | None) -> tuple[bool, str | None]:
            """(a call to plan?, the stored answer). A request identical to one planned already is the
            same call (CachedLLM sends it once); None: built on an answer not written yet."""
            if request is None:
                return True, None
            key = call_key(names[role], request)
            if key in seen_keys:
                return False, None
            seen_keys.add(key)
            if store is None or not matches:
                return True, None
            hit = store.cached(key)
            return True, (hit.text if hit is not None and hit.text else None)

        for item in items:
            answers: dict[str, list[str | None]] = {}
            unknown: dict[str, list[Range]] = {}  # per answer: its tokens inside later prompts (0 when known)
            in_a_row = 0
            for role in ("model", "reference"):
                purpose, counter = EVAL_ROLE_PURPOSE[role], counters[role]
                turns = item.turns if kind == "mtbench" else item.turns[:1]
                messages: list[dict[str, str]] = []
                pending: Range = (0.0, 0.0)
                texts: list[str | None] = []
                gaps: list[Range] = []
                to_send = 0
                for turn, question in enumerate(turns):
                    messages = [*messages, {"role": "user", "content": question}]
                    sampling = plan.answer_sampling(item, role, turn)
                    exact = all(t is not None for t in texts)
                    new, text = lookup(role, Request(messages, sampling) if exact else None)
                    text = text.strip() if text is not None else None
                    if new:
                        base = _message_tokens(counter, messages)
                        planned[purpose].add(text is not None, (base + pending[0], base + pending[1]), low[role],
                                             sampling.max_tokens)
                        to_send += text is None
                    gap = (0.0, 0.0) if text is not None else (min(low[role], sampling.max_tokens), float(sampling.max_tokens))
                    texts.append(text)
                    gaps.append(gap)
                    pending = (pending[0] + gap[0], pending[1] + gap[1])
                    messages = [*messages, {"role": "assistant", "content": text or ""}]
                answers[role], unknown[role] = texts, gaps
                in_a_row = max(in_a_row, to_send)

            judge_requests: list[tuple[list[dict[str, str]], Any, str | None, Range, bool]] = []
            if kind == "pairwise":
                prompt = plan.pair_prompts[judge_category(item.skill)]
                orders = [True, False] if config.position == "swap" else [item.position % 2 == 1]
                model_answer, reference_answer = answers["model"][0], answers["reference"][0]
                gap = _sum([unknown["model"][0], unknown["reference"][0]])
                for model_first in orders:
                    first, second = (model_answer, reference_answer) if model_first else (reference_answer, model_answer)
                    sampling = plan.judge_sampling(prompt.temperature, prompt.max_tokens, item.id,
                                                   "model_first" if model_first else "model_second")
                    judge_requests.append((prompt.messages(item.question, first or "", second or ""), sampling,
                                           PAIR_HEAD if plan.guided else None, gap,
                                           model_answer is not None and reference_answer is not None))
            else:
                for turn in range(min(2, len(item.turns))):
                    for role in ("model", "reference"):
                        texts = answers[role]
                        _name, messages = mtbench_judge_messages(plan.single_prompts, item, [t or "" for t in texts], turn)
                        sampling = plan.judge_sampling(MTBENCH_JUDGE["temperature"], MTBENCH_JUDGE["max_tokens"],
                                                       item.id, role, turn)
                        judge_requests.append((messages, sampling, RATING_HEAD if plan.guided else None,
                                               _sum(unknown[role][: turn + 1]),
                                               all(t is not None for t in texts[: turn + 1])))
            for messages, sampling, guide, gap, exact in judge_requests:
                new, text = lookup("judge", Request(messages, sampling, guide=guide) if exact else None)
                if new:
                    base = _message_tokens(counters["judge"], messages)
                    planned["eval_judge"].add(text is not None, (base + gap[0], base + gap[1]), low["judge"],
                                              sampling.max_tokens)
                    in_a_row += text is None
            chain = max(chain, in_a_row)
    finally:
        if store is not None:
            store.close()

    by_purpose: dict[str, PurposeEstimate] = {}
    for role, purpose in EVAL_ROLE_PURPOSE.items():
        p = planned[purpose]
        send = float(p.calls - p.stored)
        est = PurposeEstimate(purpose, names[role], (float(p.calls), float(p.calls)), stored=p.stored,
                              to_send=(send, send), prompt_tokens=p.prompt, completion_tokens=p.completion)
        ceiling = p.ceilings / p.calls if p.calls else 0.0
        est.completion_per_call = (p.completion[0] / send, p.completion[1] / send) if send else (min(low[role], ceiling), ceiling)
        est.completion_source = f"low: {why[role]}; high: the max tokens"
        by_purpose[purpose] = est
    est = Estimate(command="eval", items=len(items), epochs=0, by_purpose=by_purpose, concurrency=config.concurrency,
                   tokenizers={EVAL_ROLE_PURPOSE[role]: c.name for role, c in counters.items()},
                   chain_calls=(float(chain), float(chain)), store_matches=matches, notes=notes)
    if est.calls_to_send[1] > 0:
        notes.append("answers not written yet count inside the judge prompts (and second turns) at their low "
                     "completion length (low end) and their max tokens (high end)")
    if any(c.name == CharCounter.name for c in counters.values()):
        notes.append(f"prompt tokens approximated as characters / {CHARS_PER_TOKEN:g} where no tokenizer is on this machine")

    # The last run's throughput (results.json: the calls it sent over its seconds), when there was one.
    seen = None
    if out is not None and latency is None and (out / RESULTS).is_file():
        try:
            last = json.loads((out / RESULTS).read_text(encoding="utf-8"))
            sent, seconds = int(last["calls"]["sent"]), float(last["seconds"])
        except (OSError, ValueError, KeyError, TypeError):
            sent, seconds = 0, 0.0
        if sent > 0 and seconds > 0:
            seen = Observed(stored={"sent": sent}, seconds_total=seconds)
    return _finish(est, prices, latency, seen, ("sent",), started, measured_over=f"the last run's ({RESULTS})")


# ------------------------------------------------------------------------------------------ after the run
def estimate_vs_actual(estimate: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """The estimate's ranges next to what the run did (stats.json), purpose by purpose: calls sent this run
    against the calls to send, and whether each falls inside its range."""
    sent = (stats.get("calls_by_purpose") or {}).get("sent") or {}
    out: dict[str, Any] = {"by_purpose": {}}
    for purpose, entry in (estimate.get("by_purpose") or {}).items():
        lo, hi = entry["to_send"]
        actual = int(sent.get(purpose, 0))
        out["by_purpose"][purpose] = {"estimated": [lo, hi], "actual": actual, "within": lo <= actual <= hi}
    lo, hi = estimate["calls_to_send"]
    actual_calls = int(stats.get("llm_calls", sum(int(v) for v in sent.values())))
    out["calls"] = {"estimated": [lo, hi], "actual": actual_calls, "within": lo <= actual_calls <= hi}
    by_tokens = stats.get("calls_by_purpose") or {}
    for key, table in (("prompt_tokens", "prompt_tokens"), ("completion_tokens", "completion_tokens")):
        if key in estimate and table in by_tokens:
            actual = sum(int(v) for p, v in by_tokens[table].items() if p in (estimate.get("by_purpose") or {}))
            lo, hi = estimate[key]
            out[key] = {"estimated": [lo, hi], "actual": actual, "within": lo <= actual <= hi}
    if "cost_online" in estimate and isinstance(stats.get("cost"), dict):
        lo, hi = estimate["cost_online"]
        actual_cost = float(stats["cost"].get("this_run", 0.0))
        out["cost"] = {"estimated": [lo, hi], "actual": actual_cost, "within": lo <= actual_cost <= hi}
    if "time_s" in estimate and "seconds" in stats:
        lo, hi = estimate["time_s"]
        out["seconds"] = {"estimated": [lo, hi], "actual": stats["seconds"], "within": lo <= stats["seconds"] <= hi}
    return out


def with_estimate(stats: dict[str, Any], estimate: Estimate | dict[str, Any]) -> dict[str, Any]:
    """stats.json with the estimate (made before the run) and its comparison with the actual numbers:
    `write_stats(run_dir, lambda s: with_estimate(s, estimate))`."""
    data = estimate.to_dict() if isinstance(estimate, Estimate) else estimate
    return {**stats, "estimate": data, "estimate_vs_actual": estimate_vs_actual(data, stats)}
