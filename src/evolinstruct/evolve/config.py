"""The settings of an evolve run, in sections, validated when built.

What binds a run (the store refuses to resume with anything else) is a positive list: `bound()` names
every setting that changes the dataset. Everything else (transport, executor, budget, where the seeds
file lies, which endpoint serves a model) changes speed and limits only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..models.base import ModelSpec, Transport
from .templates import TemplateSet

SEPARATORS = {"repo": "\r\n", "newline": "\n", "blank-line": "\n\n", "space": " "}
SEED_RESPONSES = ("generate", "keep")


@dataclass(slots=True)
class Source:
    """Where the seeds come from and how a row becomes an instruction."""

    seeds: str
    limit: int | None = None
    column: str = "instruction"
    input_column: str | None = "input"
    input_separator: str = "\r\n"  # the WizardLM repo's; SEPARATORS names the choices

    def __post_init__(self) -> None:
        if self.limit is not None and self.limit < 1:
            raise ValueError("--limit must be 1 or more")
        if self.input_separator not in SEPARATORS.values():
            raise ValueError(f"input separator must be one of {', '.join(SEPARATORS)}")


@dataclass(slots=True)
class Algorithm:
    """The method: epochs, operations and their weights, the prompts, and the elimination rules."""

    epochs: int = 4
    seed: int = 0
    templates: str | None = None  # a set's name or file; None: the task's own (the paper's for chat)
    op_weights: str | None = None
    seed_responses: str = "generate"  # generate: answer seeds (the paper); keep: keep the seed file's outputs
    equality_check: bool = True
    task: str = "chat"  # what kind of data: its templates, rules and chain (evolve/tasks/)
    task_options: dict[str, Any] = field(default_factory=dict)  # the task's own settings (e.g. exec_check)
    # A response cut off at max_tokens: kept and marked "truncated": true (default), or eliminated as
    # truncated_answer (then its evolution's parent stays in the pool, as for any elimination).
    drop_truncated: bool = False
    # Rule language_changed (language.py): auto guards non-English seeds, on every seed, off none.
    language_guard: str = "auto"
    # Adaptive operation weights (adaptive.py): None: the configured weights for every seed; N: a pilot
    # of the first N seeds, then weights fixed from its outcomes, each operation at least op_floor.
    pilot: int | None = None
    op_floor: float = 0.05

    def __post_init__(self) -> None:
        if self.pilot is not None and self.pilot < 1:
            raise ValueError("--pilot must be 1 or more")
        if not 0 <= self.op_floor < 1:
            raise ValueError("--op-floor must be in [0, 1)")
        if self.language_guard not in ("auto", "on", "off"):
            raise ValueError("--language-guard must be auto, on or off")
        if self.epochs < 1:
            raise ValueError("--epochs must be 1 or more")
        if self.seed_responses not in SEED_RESPONSES:
            raise ValueError(f"--seed-responses must be {' or '.join(SEED_RESPONSES)}")
        from .tasks import get_task

        known = get_task(self.task).options  # an unknown task is refused here, with the choices
        unknown = sorted(set(self.task_options) - set(known))
        if unknown:
            raise ValueError(f"task '{self.task}' has no option {', '.join(unknown)}"
                             + (f" (it has: {', '.join(known)})" if known else ""))

    @property
    def template_set(self) -> str:
        """The template set to load: the one given, else the task's."""
        from .tasks import get_task

        return self.templates or get_task(self.task).templates


@dataclass(slots=True)
class SamplingConfig:
    max_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 0.9
    judge_max_tokens: int = 16

    def __post_init__(self) -> None:
        if self.max_tokens < 1 or self.judge_max_tokens < 1:
            raise ValueError("max tokens must be 1 or more")
        if self.temperature < 0 or not 0 <= self.top_p <= 1:
            raise ValueError("temperature must be >= 0 and top-p in [0, 1]")


@dataclass(slots=True)
class Roles:
    """Who does what. None: the evolver plays the role too."""

    evolver: ModelSpec = field(default_factory=ModelSpec)
    responder: ModelSpec | None = None
    judge: ModelSpec | None = None

    def __post_init__(self) -> None:
        from ..models.registry import check_spec

        for spec in (self.evolver, self.responder, self.judge):
            if spec is not None:
                check_spec(spec)

    @property
    def answer(self) -> ModelSpec:
        return self.responder or self.evolver

    @property
    def equality(self) -> ModelSpec:
        return self.judge or self.evolver

    def to_dict(self) -> dict[str, Any]:
        """Every role with its endpoint (never a key): what later commands reuse (`score` calls the run's model)."""
        return {name: spec.to_dict() if spec else None for name, spec in
                (("evolver", self.evolver), ("responder", self.responder), ("judge", self.judge))}


@dataclass(slots=True)
class ExecutorConfig:
    """How chains are scheduled: never results."""

    max_chains: int | None = None  # chains (seeds) in progress at once; default 4 x concurrency
    shard: int = 0  # this process runs the seeds whose record id falls in shard `shard` of `shards`
    shards: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.shard < self.shards:
            raise ValueError(f"shard {self.shard} is not in 0..{self.shards - 1}")


@dataclass(slots=True)
class BudgetConfig:
    max_calls: int | None = None
    max_cost: float | None = None
    prices: str | None = None

    def __post_init__(self) -> None:
        if self.max_cost is not None and self.prices is None:
            raise ValueError("--max-cost needs --prices FILE (a price table) to know what calls cost")


@dataclass(slots=True)
class BatchConfig:
    """--batch: calls go in provider batch rounds (batches.py) instead of one request each. Speed and price
    only: a batch run and an online run make the same dataset."""

    provider: str  # openai | anthropic (models/batchapi.py names them)
    max_requests: int | None = None  # per batch; default and cap: the provider's limit
    poll: float = 60.0  # seconds between looks at a submitted batch

    def __post_init__(self) -> None:
        from ..models.batchapi import batch_api_names

        if self.provider not in batch_api_names():
            raise ValueError(f"--batch must be one of {', '.join(batch_api_names())} (got {self.provider!r})")
        if self.max_requests is not None and self.max_requests < 1:
            raise ValueError("--batch-max-requests must be 1 or more")
        if not self.poll > 0:
            raise ValueError(f"--batch-poll must be greater than 0 seconds (got {self.poll:g})")


@dataclass(slots=True)
class EvolveConfig:
    source: Source
    algorithm: Algorithm = field(default_factory=Algorithm)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    roles: Roles = field(default_factory=Roles)
    transport: Transport = field(default_factory=Transport)
    executor: ExecutorConfig = field(default_factory=ExecutorConfig)
    budget: BudgetConfig = field(default_factory=BudgetConfig)
    batch: BatchConfig | None = None  # --batch: provider batch rounds instead of online calls

    def bound(self, templates: TemplateSet, seeds_digest: str) -> dict[str, Any]:
        """Every setting that determines the dataset: a RUN_DIR is bound to exactly these.

        The keys are those runs have always been bound with, so a run made before the config had
        sections still resumes; new settings join only when they differ from the old behaviour.
        """
        s, a, p, r = self.source, self.algorithm, self.sampling, self.roles

        def model(spec: ModelSpec | None) -> dict[str, Any] | None:
            return None if spec is None else {"backend": spec.backend, "model": spec.model}

        data: dict[str, Any] = {
            "epochs": a.epochs, "limit": s.limit, "seed": a.seed, "op_weights": a.op_weights,
            "column": s.column, "input_column": s.input_column, "input_separator": s.input_separator,
            "seed_responses": a.seed_responses, "equality_check": a.equality_check,
            "evolver": model(r.evolver), "responder": model(r.responder), "judge": model(r.judge),
            "max_tokens": p.max_tokens, "temperature": p.temperature, "top_p": p.top_p,
            "judge_max_tokens": p.judge_max_tokens,
            "seeds_file": Path(s.seeds).name, "seeds_sha256": seeds_digest,
            "templates": templates.name, "templates_sha256": templates.digest(),
        }
        if a.task != "chat":
            data["task"] = a.task
        if a.task_options:
            data["task_options"] = dict(sorted(a.task_options.items()))
        if a.drop_truncated:
            data["drop_truncated"] = True
        if a.pilot is not None:
            data["adaptive_weights"] = {"pilot": a.pilot, "floor": a.op_floor}
        if a.language_guard != "auto":
            data["language_guard"] = a.language_guard
        if self.executor.shards > 1:
            data["shard"] = [self.executor.shard, self.executor.shards]
        return data


def stored_separator(bound: dict[str, Any]) -> str:
    """The input separator a stored run was made with (runs have always stored it)."""
    return bound.get("input_separator", SEPARATORS["repo"])

