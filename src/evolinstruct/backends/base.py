"""The backend contract.

A backend takes a batch of requests and returns one result per request, in order. A failed request
becomes a `Result` with `error` set; a batch never raises for one bad request. This is the shape of
vLLM's `LLM.chat` and ray.data.llm's processors, so a scale-out backend is an adapter, not a rewrite.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


class BackendError(RuntimeError):
    """A backend that cannot start (missing dependency, missing key): the message says what to do."""


@dataclass(frozen=True, slots=True)
class Sampling:
    temperature: float = 1.0
    top_p: float = 1.0
    max_tokens: int = 512
    seed: int | None = None  # per-request seed: reproducible sampling where the backend honours it

    def to_dict(self) -> dict[str, Any]:
        # Spelled out rather than dataclasses.asdict: this runs for every call, twice.
        return {"temperature": self.temperature, "top_p": self.top_p, "max_tokens": self.max_tokens, "seed": self.seed}


@dataclass(frozen=True, slots=True)
class Request:
    messages: list[dict[str, str]]
    sampling: Sampling = field(default_factory=Sampling)
    # A regex the response must start with (see backends/guide.py). The local backend enforces it while
    # decoding; the others do not, so callers set it only for a local backend.
    guide: str | None = None


@dataclass(slots=True)
class Result:
    text: str = ""
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@runtime_checkable
class Backend(Protocol):
    name: str
    model: str

    async def generate(self, requests: list[Request]) -> list[Result]: ...

    async def aclose(self) -> None: ...


BACKENDS = ("local", "openai", "llamacpp", "vllm")


def make_backend(kind: str, model: str | None = None, **options: Any) -> Backend:
    """Build a backend by name. Heavy imports happen here, only for the backend asked for."""
    if kind == "local":
        from .local import LocalBackend

        return LocalBackend(model=model or "embedded", **options)
    if kind == "openai":
        from .openai_backend import OpenAIBackend

        return OpenAIBackend(model=model, **options)
    if kind == "llamacpp":
        from .llamacpp import LlamaCppBackend

        return LlamaCppBackend(model=model or "embedded", **options)
    if kind == "vllm":
        from .vllm_backend import VLLMBackend

        return VLLMBackend(model=model, **options)
    raise BackendError(f"unknown backend '{kind}' (choose {', '.join(BACKENDS)})")
