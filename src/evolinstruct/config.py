"""The settings of an evolve run. What changes results is hashed into the run store; the rest is not."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .templates import TemplateSet


@dataclass(slots=True)
class ModelSpec:
    backend: str = "local"  # local | openai
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"

    @property
    def label(self) -> str:
        return self.model or "embedded"


@dataclass(slots=True)
class EvolveConfig:
    seeds: str
    epochs: int = 4
    limit: int | None = None
    seed: int = 0
    templates: str = "paper"
    op_weights: str | None = None
    column: str = "instruction"
    input_column: str | None = "input"
    input_separator: str = "\r\n"
    seed_responses: str = "generate"  # generate | keep
    evolver: ModelSpec = field(default_factory=ModelSpec)
    responder: ModelSpec | None = None  # None: the evolver answers too
    judge: ModelSpec | None = None  # None: the evolver judges equality
    equality_check: bool = True
    max_tokens: int = 2048
    temperature: float = 1.0
    top_p: float = 0.9
    judge_max_tokens: int = 16
    concurrency: int = 32
    max_chains: int | None = None  # chains (seeds) in progress at once; default 4 x concurrency
    # Operational settings: they change speed and limits, never results, so they are not hashed.
    rpm: float | None = None
    tpm: float | None = None
    request_timeout: float = 600.0
    max_retries: int = 6
    http_client: str = "aiohttp"
    max_calls: int | None = None
    max_cost: float | None = None
    prices: str | None = None

    def result_relevant(self, templates: TemplateSet, seeds_digest: str) -> dict[str, Any]:
        """The part of the config that determines the dataset: a RUN_DIR is bound to it."""
        data = asdict(self)
        for key in OPERATIONAL:
            data.pop(key)
        for spec in ("evolver", "responder", "judge"):
            if data[spec]:
                data[spec].pop("base_url")
                data[spec].pop("api_key_env")
        data["seeds_file"] = Path(self.seeds).name
        data["seeds_sha256"] = seeds_digest
        data["templates"] = templates.name
        data["templates_sha256"] = hashlib.sha256(
            repr(sorted((k, repr(v)) for k, v in templates.operations.items())).encode()
            + templates.equality.encode()
            + (templates.system or "").encode()
        ).hexdigest()[:16]
        return data


OPERATIONAL = (
    "seeds", "concurrency", "max_chains", "rpm", "tpm", "request_timeout", "max_retries", "http_client",
    "max_calls", "max_cost", "prices",
)


def file_digest(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]
