"""The one place a backend is named: its name and where its class lives. Nothing else branches on names.

A new backend is one file plus one line in `REGISTRY` (or a `register(...)` call from a plugin or a
test). Its class provides:
- `from_spec(spec, transport)`, a classmethod that builds it;
- `capabilities`, a `Capabilities` (what callers may ask of it: guided decoding, in-process weights, ...);
- in-process backends: `display_name(model)`, the name calls are stored under, known without loading;
- optionally `check(spec)`, a classmethod that rejects a spec before anything runs.

Classes are imported only when a spec names them, so torch, vLLM or llama.cpp load only when used.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

from .base import Backend, BackendError, ModelSpec, Request, Result, Transport, capabilities

REGISTRY: dict[str, str | type] = {
    "local": "evolinstruct.models.local:LocalBackend",
    "openai": "evolinstruct.models.openai:OpenAIBackend",
    "llamacpp": "evolinstruct.models.llamacpp:LlamaCppBackend",
    "vllm": "evolinstruct.models.vllm:VLLMBackend",
    "anthropic": "evolinstruct.models.anthropic:AnthropicBackend",
}


def register(name: str, target: str | type) -> None:
    """Add a backend: `target` is its class or 'module:Class'."""
    REGISTRY[name] = target


def backend_names() -> tuple[str, ...]:
    return tuple(REGISTRY)


def load_entry(table: dict[str, str | type], name: str, what: str) -> type:
    """The class a table names, importing a lazy "module:Class" entry once (and keeping the class)."""
    target = table.get(name)
    if target is None:
        raise BackendError(f"unknown {what} '{name}' (choose {', '.join(table)})")
    if isinstance(target, str):
        module, _, attr = target.partition(":")
        target = getattr(importlib.import_module(module), attr)
        table[name] = target
    return target


def backend_class(name: str) -> type:
    return load_entry(REGISTRY, name, "backend")


def check_spec(spec: ModelSpec) -> None:
    """Reject a spec that cannot work, before a run directory is touched."""
    cls = backend_class(spec.backend)
    if capabilities(cls).needs_model and not spec.model:
        raise BackendError(f"the {spec.backend} backend needs a model name (the model the server serves, or a hub id)")
    check = getattr(cls, "check", None)
    if check is not None:
        check(spec)


def build(spec: ModelSpec, transport: Transport, lazy: bool = False) -> Backend:
    """A backend for `spec`. `lazy`: an in-process backend loads its weights on the first call."""
    cls = backend_class(spec.backend)
    if lazy and capabilities(cls).in_process:
        return LazyBackend(cls, spec, transport)
    return cls.from_spec(spec, transport)


class LazyBackend:
    """An in-process backend built on the first call the run store cannot answer: a rerun whose calls
    are all stored starts at once and loads no weights."""

    def __init__(self, cls: type, spec: ModelSpec, transport: Transport) -> None:
        self.name = spec.backend
        self.model = cls.display_name(spec.model)  # the name calls are keyed by, known without loading
        self.capabilities = capabilities(cls)
        self._cls, self._spec, self._transport = cls, spec, transport
        self._backend: Backend | None = None
        self._lock = asyncio.Lock()

    @property
    def loaded(self) -> Backend | None:
        return self._backend

    async def generate(self, requests: list[Request]) -> list[Result]:
        async with self._lock:
            if self._backend is None:
                self._backend = await asyncio.to_thread(self._cls.from_spec, self._spec, self._transport)
        return await self._backend.generate(requests)

    async def aclose(self) -> None:
        if self._backend is not None:
            await self._backend.aclose()


class Backends:
    """The backends of one command, one per distinct (backend, model, endpoint, key): roles that name
    the same model share it (the embedded default serves every role of a run from one copy)."""

    def __init__(self, transport: Transport, lazy: bool = False) -> None:
        self.transport = transport
        self.lazy = lazy
        self._built: dict[tuple[Any, ...], Backend] = {}

    def get(self, spec: ModelSpec) -> Backend:
        key = (spec.backend, spec.model or "embedded", spec.base_url, spec.api_key_env, spec.endpoints)
        if key not in self._built:
            self._built[key] = build(spec, self.transport, self.lazy)
        return self._built[key]

    def counters(self) -> dict[str, dict[str, int]]:
        """HTTP retry and failure counters of each backend that keeps them, by 'name:model'."""
        out = {}
        for backend in self._built.values():
            inner = backend.loaded if isinstance(backend, LazyBackend) else backend
            out[f"{backend.name}:{backend.model}"] = dict(getattr(inner, "counters", {}) or {})
        return out

    def _inner(self) -> list[Any]:
        return [b.loaded if isinstance(b, LazyBackend) else b for b in self._built.values()]

    def endpoint_stats(self) -> dict[str, dict[str, Any]]:
        """Per endpoint of every backend served by several: calls, failures, mean latency, tokens (stats.json)."""
        out: dict[str, dict[str, Any]] = {}
        for inner in self._inner():
            stats = getattr(inner, "endpoint_stats", None)
            out.update((stats() if stats else None) or {})
        return out

    def endpoints_up(self) -> tuple[int, int] | None:
        """(endpoints admitted, endpoints) over every backend served by several; None when none is."""
        counts = [c for inner in self._inner() if (f := getattr(inner, "endpoints_up", None)) and (c := f())]
        return (sum(c[0] for c in counts), sum(c[1] for c in counts)) if counts else None

    async def aclose(self) -> None:
        for backend in self._built.values():
            await backend.aclose()
