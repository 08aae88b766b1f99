"""Many endpoints behind one model: the pool that routes an OpenAI-compatible backend's attempts.

- Routing: least outstanding requests relative to each endpoint's bound (its concurrency), so a faster
  endpoint, which returns its requests sooner, gets more; an endpoint at its bound gets none.
- Ejection: an endpoint that refuses connections is ejected at once; one that fails `EJECT_AFTER` attempts
  in a row (5xx, timeouts, dropped connections) too. An ejected endpoint gets no requests; a background
  probe asks its `/models` with exponential backoff and re-admits it when it answers. The attempt that
  failed is retried on another endpoint at once (the caller's retry loop does not count it).
- A 429 slows only the endpoint that sent it: no request goes there until its Retry-After has passed.
- When every endpoint is ejected, requests still go to the one ejected longest ago (an unprobed probe):
  they fail fast and count as retries, so a run against a dead fleet ends with failed calls (retried by
  the next run) instead of hanging.

Which endpoint answered never reaches a result, a call key (calls.py keys by model and request only) or a
record: a run resumes against any set of endpoints. Per-endpoint counters go to stats.json "endpoints".
"""

from __future__ import annotations

import asyncio
import math
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..redact import redact
from .base import BackendError, EndpointSpec

EJECT_AFTER = 3  # failed attempts in a row (5xx, timeouts, resets) that eject an endpoint
PROBE_FIRST = 0.5  # seconds before the first probe of an ejected endpoint; doubles up to PROBE_MAX
PROBE_MAX = 10.0
WAKE_EVERY = 0.25  # a waiting request rechecks slowed endpoints this often


def check_base_url(url: str | None) -> None:
    """An OpenAI-compatible endpoint must be http(s) with a host; anything else fails before a run starts."""
    if url is None:
        return
    parsed = urllib.parse.urlsplit(url.strip())
    try:
        parsed.port  # noqa: B018 - raises on a port that is not a number in range
        port_ok = True
    except ValueError:
        port_ok = False
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
        raise BackendError(f"base URL '{redact(url)}' is not usable: it needs http:// or https:// and a host, "
                           "e.g. http://127.0.0.1:8000/v1")


def parse_endpoints_file(path: str | Path) -> tuple[EndpointSpec, ...]:
    """`--endpoints FILE`: one endpoint per line, `URL [concurrency=N] [model=NAME]` (or a bare number for the
    concurrency); blank lines and `#` comments are skipped. A bad line fails with `FILE:LINE: why`."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ValueError(f"{path}:0: cannot read the endpoints file ({exc.strerror or exc})") from None
    out: list[EndpointSpec] = []
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        url, *rest = line.split()
        concurrency: int | None = None
        model: str | None = None
        try:
            check_base_url(url)
            for item in rest:
                name, eq, value = item.partition("=")
                if not eq and name.isdigit():
                    name, value = "concurrency", name
                if name == "concurrency":
                    concurrency = int(value)
                    if concurrency < 1:
                        raise ValueError
                elif name == "model" and value:
                    model = value
                else:
                    raise BackendError(f"unknown field '{item}' (expected concurrency=N or model=NAME)")
        except ValueError:
            raise ValueError(f"{path}:{number}: concurrency must be a whole number of 1 or more") from None
        except BackendError as exc:
            raise ValueError(f"{path}:{number}: {exc}") from None
        out.append(EndpointSpec(url=url.rstrip("/"), concurrency=concurrency, model=model))
    if not out:
        raise ValueError(f"{path}:1: no endpoint in the file (one URL per line, e.g. http://10.0.0.2:8000/v1)")
    return tuple(out)


@dataclass(slots=True)
class Endpoint:
    url: str
    limit: int  # requests in flight here at most
    model: str | None = None  # the name this endpoint serves the model under (None: the run's --model)
    index: int = 0
    outstanding: int = 0
    up: bool = True
    fails_in_row: int = 0
    ejected_at: float = 0.0
    slow_until: float = 0.0  # a 429's Retry-After: no request goes here before this (monotonic)
    calls: int = 0  # successful responses
    failures: int = 0  # attempts that failed (any reason)
    latency: float = 0.0  # summed seconds of successful attempts
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ejections: int = 0
    readmissions: int = 0
    probing: bool = False  # a probe task watches this endpoint (one at most: two would re-admit it twice)
    by_reason: dict[str, int] = field(default_factory=dict)

    def stats(self) -> dict[str, Any]:
        return {
            "calls": self.calls, "failures": self.failures,
            "mean_latency_s": round(self.latency / self.calls, 4) if self.calls else None,
            "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "ejections": self.ejections, "readmissions": self.readmissions, "up": self.up,
            "failures_by_reason": dict(sorted(self.by_reason.items())),
        }


class EndpointPool:
    """Routes attempts over endpoints (see the module docstring). `probe(url)` answers whether an ejected
    endpoint is back (the backend's GET /models)."""

    def __init__(self, specs: tuple[EndpointSpec, ...], default_limit: int,
                 probe: Callable[[str], Awaitable[bool]]) -> None:
        self.endpoints = [Endpoint(url=s.url.rstrip("/"), limit=s.concurrency or default_limit, model=s.model, index=i)
                          for i, s in enumerate(specs)]
        self._probe = probe
        self._wake: asyncio.Event | None = None  # set whenever a request leaves or an endpoint comes back
        self._probes: set[asyncio.Task[None]] = set()

    @property
    def up(self) -> int:
        return sum(e.up for e in self.endpoints)

    def _pick(self, now: float) -> Endpoint | None:
        best, best_load = None, math.inf
        for e in self.endpoints:
            if e.up and e.outstanding < e.limit and e.slow_until <= now:
                load = e.outstanding / e.limit
                if load < best_load:
                    best, best_load = e, load
        if best is None and not any(e.up for e in self.endpoints):
            # The whole fleet is ejected: try the one ejected longest ago rather than wait forever, still
            # within its bound (a dead fleet must not take every request in flight at one endpoint).
            free = [e for e in self.endpoints if e.outstanding < e.limit]
            best = min(free, key=lambda e: e.ejected_at) if free else None
        return best

    def _notify(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def acquire(self) -> Endpoint:
        """The endpoint for one attempt; waits while every admitted endpoint is at its bound or slowed."""
        while True:
            # No await between the pick and the count: one event loop, so no other request can interleave.
            endpoint = self._pick(time.monotonic())
            if endpoint is not None:
                endpoint.outstanding += 1
                return endpoint
            if self._wake is None:
                self._wake = asyncio.Event()
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), WAKE_EVERY)
            except asyncio.TimeoutError:
                pass

    def release(self, endpoint: Endpoint, outcome: str, seconds: float = 0.0, prompt_tokens: int = 0,
                completion_tokens: int = 0, retry_after: float | None = None) -> bool:
        """Record one attempt's outcome: "ok", "connect" (refused), "failed" (5xx, timeout, reset, empty),
        "429", or "final" (an answer no other endpoint would change). True when this ejected the endpoint."""
        ejected = False
        endpoint.outstanding -= 1
        if outcome == "ok":
            endpoint.calls += 1
            endpoint.latency += seconds
            endpoint.prompt_tokens += prompt_tokens
            endpoint.completion_tokens += completion_tokens
            endpoint.fails_in_row = 0
            if not endpoint.up:  # sent there while the whole fleet was ejected, and it answered: it is back
                endpoint.up = True
                endpoint.readmissions += 1
        else:
            endpoint.failures += 1
            endpoint.by_reason[outcome] = endpoint.by_reason.get(outcome, 0) + 1
            if outcome == "429":
                endpoint.slow_until = max(endpoint.slow_until, time.monotonic() + (retry_after or PROBE_FIRST))
            elif outcome in ("connect", "failed"):
                endpoint.fails_in_row += 1
                if endpoint.up and (outcome == "connect" or endpoint.fails_in_row >= EJECT_AFTER):
                    ejected = self._eject(endpoint)
        self._notify()
        return ejected

    def _eject(self, endpoint: Endpoint) -> bool:
        if len(self.endpoints) == 1:
            return False  # one endpoint: nowhere else to go; the backend's own retries and checks apply
        endpoint.up = False
        endpoint.ejections += 1
        endpoint.ejected_at = time.monotonic()
        if endpoint.probing:  # re-admitted by a request, then ejected again before its probe woke: it goes on
            return True
        endpoint.probing = True
        task = asyncio.get_running_loop().create_task(self._watch(endpoint))
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)
        return True

    async def _watch(self, endpoint: Endpoint) -> None:
        try:
            await self._watch_until_up(endpoint)
        finally:
            endpoint.probing = False

    async def _watch_until_up(self, endpoint: Endpoint) -> None:
        delay = PROBE_FIRST
        while not endpoint.up:
            await asyncio.sleep(delay)
            if endpoint.up:  # a request that went there anyway (all ejected) succeeded
                return
            try:
                back = await self._probe(endpoint.url)
            except Exception:  # noqa: BLE001 - a probe that fails is an endpoint still down
                back = False
            if back and not endpoint.up:  # (a request may have re-admitted it while the probe was out)
                endpoint.up = True
                endpoint.fails_in_row = 0
                endpoint.readmissions += 1
                self._notify()
                return
            delay = min(PROBE_MAX, delay * 2)

    def stats(self) -> dict[str, dict[str, Any]]:
        return {redact(e.url): e.stats() for e in self.endpoints}

    async def aclose(self) -> None:
        for task in list(self._probes):
            task.cancel()
        if self._probes:
            await asyncio.gather(*self._probes, return_exceptions=True)
