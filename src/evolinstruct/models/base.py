"""The backend contract.

A backend takes a batch of requests and returns one result per request, in order. A failed request
becomes a `Result` with `error` set; a batch never raises for one bad request. This is the shape of
vLLM's `LLM.chat` and ray.data.llm's processors, so a scale-out backend is an adapter, not a rewrite.

The one exception is `FatalBackendError`: the backend cannot serve any request (a rejected key, a model
the server does not have, nothing answering at the URL). It is raised, not returned, and stops the whole
run at once; calls stored so far stay stored, so a rerun after the fix resumes.

An empty completion is never a success: `CachedLLM` (calls.py) turns one from any backend into an error
`Result`, which is not stored and is retried by the next run. Error texts never carry a key (redact.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

DEFAULT_KEY_ENV = "OPENAI_API_KEY"
EMBEDDED = "embedded"


class BackendError(RuntimeError):
    """A backend that cannot start (missing dependency, missing key): the message says what to do."""


class FatalBackendError(BackendError):
    """A backend that cannot serve any call: the server rejected the key (401, 403), does not know the model
    (404 model not found), or nothing answered at the URL. Raised from `generate`, it stops the run at once;
    the message is one line, says what to fix, and holds no key."""


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
    # A regex the response must start with (see models/guide.py). Only a backend whose capabilities say
    # `guides` enforces it, so callers set it only for such a backend.
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
    """What every backend implements. Its class also says what it can do (capability flags, read with
    `capabilities()`): callers ask what a backend can do, never which backend it is.

    Optionally, `waiting() -> (seconds, why) | None`: the longest retry wait in progress (a 429's Retry-After,
    a backoff), for the progress line."""

    name: str
    model: str

    async def generate(self, requests: list[Request]) -> list[Result]: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class Capabilities:
    # Enforces `Request.guide` while decoding (a regex the response must start with).
    guides: bool = False
    # Loads weights into this process: built lazily, so a resumed run whose calls are all stored loads none.
    in_process: bool = False
    # Needs a model name (a served model or a hub id); the others default to the embedded model.
    needs_model: bool = False


def capabilities(backend: Any) -> Capabilities:
    """A backend class's or instance's flags; a class that declares none has none."""
    return getattr(backend, "capabilities", Capabilities())


@dataclass(frozen=True, slots=True)
class EndpointSpec:
    """One endpoint of a model served by several (models/endpoints.py): its URL, how many requests it takes
    at once (None: the run's --concurrency), and the name it serves the model under (None: --model)."""

    url: str
    concurrency: int | None = None
    model: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"url": self.url, "concurrency": self.concurrency, "model": self.model}


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """Which model plays a role: its backend, its name, its endpoint, and the variable that holds its key."""

    backend: str = "local"
    model: str | None = None
    base_url: str | None = None
    api_key_env: str = DEFAULT_KEY_ENV
    # More than one endpoint serving the model (--base-url given twice, --endpoints FILE); base_url is the first.
    # Never bound to a run: which endpoint answers changes no result.
    endpoints: tuple[EndpointSpec, ...] = ()

    @property
    def label(self) -> str:
        return self.model or EMBEDDED

    def to_dict(self) -> dict[str, Any]:
        out = {"backend": self.backend, "model": self.model, "base_url": self.base_url, "api_key_env": self.api_key_env}
        if self.endpoints:  # only when set, so single-endpoint runs keep their stored shape
            out["endpoints"] = [e.to_dict() for e in self.endpoints]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> ModelSpec | None:
        if not data:
            return None
        known = {k: data[k] for k in ("backend", "model", "base_url", "api_key_env") if data.get(k) is not None}
        if data.get("endpoints"):
            known["endpoints"] = tuple(EndpointSpec(**e) for e in data["endpoints"])
        return cls(**known)


@dataclass(frozen=True, slots=True)
class Transport:
    """How calls are sent: speed and limits, never results (not bound to a run)."""

    concurrency: int = 32
    rpm: float | None = None
    tpm: float | None = None
    request_timeout: float = 600.0
    max_retries: int = 6
    http_client: str = "aiohttp"
    max_retry_after: float = 60.0  # the longest a Retry-After header may make one retry wait (seconds)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError(f"--concurrency must be 1 or more (got {self.concurrency})")
        # 0 is not "no limit" (that is leaving the option out): it would stop every call, so it is refused.
        for option, value in (("--rpm", self.rpm), ("--tpm", self.tpm)):
            if value is not None and not value > 0:
                raise ValueError(f"{option} must be greater than 0 (got {value:g}); leave it out for no cap")
        for option, value in (("--request-timeout", self.request_timeout), ("--max-retry-after", self.max_retry_after)):
            if not value > 0:
                raise ValueError(f"{option} must be greater than 0 seconds (got {value:g})")
