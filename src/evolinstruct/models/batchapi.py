"""The provider batch contract (--batch): what batches.py needs from OpenAI's Batch API or Anthropic's
Message Batches. An adapter turns requests into lines, submits a batch, finds a batch created by a run
that was killed before it could record the id, polls, and reads results back. It knows nothing of rounds,
chains or the store (batches.py).

Errors: `FatalBackendError` (a refused key) stops the run; `TransientBatchError` (no connection, a 5xx
after the SDK's retries) is retried by the caller with backoff; `BatchTooLarge`: the provider refused the
batch for its size, and the caller splits it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from .base import BackendError, ModelSpec, Request, Result, Transport, capabilities

# The one place a batch API is named (as REGISTRY is for backends): 'module:Class' or a class (a test's own).
BATCH_APIS: dict[str, str | type] = {
    "openai": "evolinstruct.models.openai_batch:OpenAIBatchAPI",
    "anthropic": "evolinstruct.models.anthropic:AnthropicBatchAPI",
}


class TransientBatchError(RuntimeError):
    """A batch call that may succeed later (no connection, a 5xx)."""


class BatchTooLarge(RuntimeError):
    """The provider refused a batch for its size or request count: submit it in smaller parts."""


@dataclass(slots=True)
class BatchStatus:
    state: str  # running | ended (results can be read: completed, expired, cancelled) | failed (no results)
    status: str  # the provider's own word (validating, in_progress, ..., ended)
    counts: dict[str, int] = field(default_factory=dict)
    error: str = ""  # why a failed batch failed
    too_large: bool = False  # failed for a provider limit: split it and submit again


@dataclass(slots=True)
class LineResult:
    result: Result
    retryable: bool = False  # a per-line error worth submitting again (5xx, 429, expired, cancelled)


class BatchAPI(Protocol):
    provider: str
    max_requests: int  # requests per batch
    max_bytes: int  # bytes per batch (the input file, or the request body)

    def line(self, custom_id: str, model: str, request: Request) -> dict[str, Any]: ...

    # Submits a batch, returns its provider id. Calls `on_uploaded(file_id or "")` once the batch may be created
    # (after the upload; Anthropic: before the create), so the store knows to look for it after a kill.
    async def submit(self, uid: str, lines: list[dict[str, Any]], on_uploaded: Callable[[str], None]) -> str: ...

    # `taken`: provider ids already recorded for other batches of the run: never the answer (Anthropic matches
    # by time and size, and a round's parts often have the same size).
    async def find(self, uid: str, file_id: str | None, created: float, requests: int,
                   taken: frozenset[str] = frozenset()) -> str | None: ...

    async def poll(self, batch_id: str) -> BatchStatus: ...

    async def results(self, batch_id: str) -> dict[str, LineResult]: ...

    async def aclose(self) -> None: ...


def batch_api_names() -> tuple[str, ...]:
    return tuple(BATCH_APIS)


def batch_backend(provider: str | None, backend: str | None) -> str | None:
    """The backend of a --batch run: the one given, else the provider's own online backend (a batch provider is
    named as its backend in registry.py). Without this, `--model gpt-4o-mini --batch openai` and no --base-url
    made a run bound to the in-process `local` backend, which score and an online resume then tried to load."""
    return backend if backend is not None or provider not in BATCH_APIS else provider


def check_batch_specs(specs: list[ModelSpec]) -> None:
    """--batch sends every role's calls to a provider's batch API: a role played in-process has none."""
    from .registry import backend_class

    for spec in specs:
        if capabilities(backend_class(spec.backend)).in_process:
            raise BackendError(f"--batch sends calls to a provider's batch API, but the {spec.backend} backend runs "
                               "in-process: give --backend openai or anthropic (or drop --batch)")


def build_batch_api(provider: str, spec: ModelSpec, transport: Transport) -> BatchAPI:
    """The batch API of `provider` at the spec's endpoint, with the spec's key."""
    from .registry import load_entry

    return load_entry(BATCH_APIS, provider, "batch provider").from_spec(spec, transport)
