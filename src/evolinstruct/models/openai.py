"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, SGLang, TGI, Ollama, llama.cpp's server.

The default HTTP path is a lean aiohttp client: one connection pool sized to the concurrency, JSON in
and out, our own retries. It holds 1,000+ requests in flight on 2 cores, where httpx (the openai SDK's
default transport) degrades past ~32 connections; docs/BENCHMARKS.md has the measurement. The SDK
path (`http_client="sdk"`, optionally over the SDK's aiohttp transport) is kept for comparison.

Retries: 408/409/429/5xx, timeouts, connection errors and empty completions (`content` null or ""), with
exponential backoff and full jitter; a 429 waits its Retry-After before its retry, capped at
`max_retry_after` (a longer one waits the cap and counts as a normal retry). Other 4xx fail at once. A
request that still fails becomes a `Result` with `error`, never an exception for the batch.

Fatal, raised as `FatalBackendError` so the run stops at once: 401 and 403 (the key), 404 whose body says
the model is not found, and the first NOTHING_ANSWERS_AFTER calls all failing to connect before the server
ever answered (nothing listens at the URL). Base URLs are checked before anything runs (`check`).
Every error text goes through `redact` with the key in use: no key reaches the store, a file or the console.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import time
from collections import Counter
from typing import Any

from ..redact import redact
from .base import (
    BackendError,
    Capabilities,
    EndpointSpec,
    FatalBackendError,
    ModelSpec,
    Request,
    Result,
    Transport,
)
from .endpoints import EndpointPool, check_base_url
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}
FATAL_STATUS = {401, 403}  # the key: no other request can succeed either
# Stop when this many calls in a row, from the first, failed to connect and the server never answered once.
NOTHING_ANSWERS_AFTER = 20
EMPTY_COMPLETION = "empty completion"
SHOW_WAIT = 1.0  # retry waits at least this long are reported by waiting() (the progress line)
_MODEL_NOT_FOUND = ("model_not_found", "not found", "does not exist", "no such model", "unknown model")


def server_message(body: str) -> str:
    """The human part of an error body (OpenAI's error.message, vLLM's message, FastAPI's detail), on one line."""
    try:
        data = json.loads(body)
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, dict):
            message = error.get("message") or error.get("code")
        elif isinstance(error, str):
            message = error
        message = message or data.get("message") or data.get("detail")
    return " ".join(str(message or body).split())[:300]


def is_model_not_found(body: str) -> bool:
    low = body.lower()
    return "model" in low and any(marker in low for marker in _MODEL_NOT_FOUND)


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: either a number or an HTTP date."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class OpenAIBackend:
    name = "openai"
    capabilities = Capabilities(needs_model=True)
    default_endpoint = "https://api.openai.com/v1"

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> OpenAIBackend:
        return cls(
            model=spec.model, base_url=spec.base_url, api_key_env=spec.api_key_env,
            concurrency=transport.concurrency, rpm=transport.rpm, tpm=transport.tpm,
            timeout=transport.request_timeout, max_retries=transport.max_retries, http_client=transport.http_client,
            max_retry_after=transport.max_retry_after, endpoints=spec.endpoints,
        )

    @classmethod
    def check(cls, spec: ModelSpec) -> None:
        """Reject an unusable base URL before a run directory is touched."""
        check_base_url(spec.base_url)
        for e in spec.endpoints:
            check_base_url(e.url)

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout: float = 600.0,
        max_retries: int = 6,
        send_seed: bool = True,
        rpm: float | None = None,
        tpm: float | None = None,
        http_client: str = "aiohttp",
        backoff_base: float = 0.5,
        backoff_max: float = 20.0,
        max_retry_after: float = 60.0,
        endpoints: tuple[EndpointSpec, ...] = (),
    ) -> None:
        check_base_url(base_url)
        if not model:
            raise BackendError("the openai backend needs --model (the model name the server serves)")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise BackendError(f"no API key: set the environment variable {api_key_env} (or pass --api-key-env NAME)")
            api_key = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) accept any key
        if http_client not in ("aiohttp", "sdk", "sdk-aiohttp"):
            raise BackendError(f"unknown http client '{http_client}' (aiohttp, sdk or sdk-aiohttp)")
        self.model = model
        self.base_url = (base_url or self.default_endpoint).rstrip("/")
        self.send_seed = send_seed
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_base, self.backoff_max = backoff_base, backoff_max
        self.max_retry_after = max_retry_after
        self.api_key_env = api_key_env
        self.http_client = http_client
        self.limiter = RateLimiter(rpm, tpm)
        self.counters: Counter = Counter()  # retries and failures by kind, for stats.json
        self._api_key = api_key
        self._limit = asyncio.Semaphore(concurrency)
        self._jitter = random.Random()  # jitter only spreads retries; it never touches results
        self._session: Any = None
        self._timeout: Any = None  # one aiohttp.ClientTimeout, built with the session
        self._sdk: Any = None
        self._reached = False  # the server has answered at least once (any HTTP status)
        self._unreachable = 0  # calls that failed to connect on every attempt
        self._waits: dict[int, tuple[float, str]] = {}  # retry waits in progress: token -> (until, why)
        self._wait_tokens = 0
        self._warned_cap = False
        # Several endpoints (or one with its own bound or model name): a pool routes each attempt
        # (models/endpoints.py). A plain base URL: the direct path, as before.
        self.pool: EndpointPool | None = None
        if endpoints:
            if http_client != "aiohttp":
                raise BackendError("several endpoints need the default http client (aiohttp)")
            self.pool = EndpointPool(endpoints, concurrency, self._probe)

    # ---------------------------------------------------------------- errors
    def _redact(self, text: str) -> str:
        return redact(text, (self._api_key,))

    def _fatal(self, status: int, body: str, url: str | None = None) -> FatalBackendError | None:
        """The error that stops the run for this response, or None when other requests may still succeed."""
        if status in FATAL_STATUS:
            fix = f"the server refused the key: check {self.api_key_env} (or --api-key-env)"
        elif status == 404 and is_model_not_found(body):
            fix = f"the server does not serve model '{self.model}': check --model"
        else:
            return None
        message = self._redact(server_message(body))
        return FatalBackendError(f"HTTP {status} from {url or self.base_url}: {message} ({fix}); everything finished so far "
                                 "is stored: rerun the same command to resume")

    def _unanswered(self, error: str) -> None:
        """A call failed to connect on every attempt: stop the run if nothing has ever answered at the URL."""
        self._unreachable += 1
        if not self._reached and self._unreachable >= NOTHING_ANSWERS_AFTER:
            raise FatalBackendError(
                f"nothing answers at {self.base_url}: the first {self._unreachable} calls all failed to connect "
                f"({error}); check --base-url and that the server is running, then rerun the same command to resume"
            )

    # ---------------------------------------------------------------- waits
    def _delay(self, retry_after: float | None, attempt: int) -> float:
        if retry_after is None:
            return self._backoff(attempt)
        if retry_after > self.max_retry_after:
            self.counters["retry_after_capped"] += 1
            if not self._warned_cap:
                self._warned_cap = True
                log.warning("%s asked to retry after %.0fs; waiting %.0fs (--max-retry-after)",
                            self.base_url, retry_after, self.max_retry_after)
            return self.max_retry_after
        return retry_after

    async def _wait(self, delay: float, why: str) -> None:
        if delay < SHOW_WAIT:
            await asyncio.sleep(delay)
            return
        self._wait_tokens += 1
        token = self._wait_tokens
        self._waits[token] = (time.monotonic() + delay, why)
        try:
            await asyncio.sleep(delay)
        finally:
            del self._waits[token]

    def waiting(self) -> tuple[float, str] | None:
        """The longest retry wait in progress: (seconds left, why), e.g. (58.2, "429"); None when none."""
        if not self._waits:
            return None
        until, why = max(self._waits.values())
        return max(0.0, until - time.monotonic()), why

    # ---------------------------------------------------------------- plumbing
    def _payload(self, request: Request) -> dict[str, Any]:
        return chat_body(self.model, request, self.send_seed)

    def _session_for_loop(self) -> Any:
        if self._session is None:
            import aiohttp

            connector = aiohttp.TCPConnector(limit=self.concurrency, limit_per_host=self.concurrency, ttl_dns_cache=300)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"Authorization": f"Bearer {self._api_key}", "Content-Type": "application/json"},
                json_serialize=json.dumps,
            )
        return self._session

    def _sdk_client(self) -> Any:
        if self._sdk is None:
            import openai

            extra: dict[str, Any] = {}
            if self.http_client == "sdk-aiohttp":
                extra["http_client"] = openai.DefaultAioHttpClient()
            self._sdk = openai.AsyncOpenAI(
                api_key=self._api_key, base_url=self.base_url, timeout=self.timeout, max_retries=0, **extra
            )
        return self._sdk

    def _backoff(self, attempt: int) -> float:
        return self._jitter.uniform(0, min(self.backoff_max, self.backoff_base * 2**attempt))

    @staticmethod
    def _estimate_tokens(request: Request) -> float:
        chars = sum(len(m.get("content") or "") for m in request.messages)
        return chars / 4 + request.sampling.max_tokens

    # ---------------------------------------------------------------- one attempt
    async def _attempt_aiohttp(self, body: bytes, url: str | None = None) -> tuple[Result | None, str, float | None, str]:
        """(result, error, retry_after, why): a result when done (success or final failure), else a retryable
        error and why it is retried (a status, "connect", "connection", "timeout", "empty completion")."""
        import aiohttp

        session = self._session_for_loop()
        if self._timeout is None:
            self._timeout = aiohttp.ClientTimeout(total=self.timeout)
        base_url = url or self.base_url
        try:
            async with session.post(f"{base_url}/chat/completions", data=body, timeout=self._timeout) as resp:
                self._reached = True
                if resp.status == 200:
                    return self._completed(_parse(await resp.read()))
                text = await resp.text(errors="replace")
                if fatal := self._fatal(resp.status, text, base_url):
                    raise fatal
                error = f"HTTP {resp.status}: {self._redact(text[:300])}"
                if resp.status in RETRY_STATUS or resp.status >= 500:
                    self.counters[f"retry_http_{resp.status}"] += 1
                    return None, error, retry_after_seconds(resp.headers.get("Retry-After")), str(resp.status)
                return Result(error=error), error, None, ""
        except asyncio.TimeoutError:
            self.counters["retry_timeout"] += 1
            return None, f"timeout after {self.timeout:g}s", None, "timeout"
        except aiohttp.ClientConnectorError as exc:
            self.counters["retry_connection"] += 1
            return None, self._redact(f"cannot connect to {base_url} ({type(exc).__name__}: {exc})"), None, "connect"
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            self.counters["retry_connection"] += 1
            return None, self._redact(f"{type(exc).__name__}: {exc}"), None, "connection"

    def _completed(self, result: Result) -> tuple[Result | None, str, float | None, str]:
        """A 200's result: an empty completion is retried like a 5xx, never returned as a success."""
        if not result.ok and (result.error or "").startswith(EMPTY_COMPLETION):
            self.counters["retry_empty"] += 1
            return None, result.error, None, EMPTY_COMPLETION
        if not result.ok:  # a malformed body quotes the server
            result.error = self._redact(result.error or "")
        return result, "", None, ""

    async def _attempt_sdk(self, payload: dict[str, Any]) -> tuple[Result | None, str, float | None, str]:
        import openai

        client = self._sdk_client()
        try:
            response = await client.chat.completions.create(**payload)
        except openai.APIStatusError as exc:
            self._reached = True
            try:
                text = exc.response.text
            except Exception:  # noqa: BLE001 - a body that cannot be read is no reason to lose the error
                text = str(exc)
            if fatal := self._fatal(exc.status_code, text):
                raise fatal from None
            error = f"HTTP {exc.status_code}: {self._redact(str(exc)[:300])}"
            if exc.status_code in RETRY_STATUS or exc.status_code >= 500:
                self.counters[f"retry_http_{exc.status_code}"] += 1
                return None, error, retry_after_seconds(exc.response.headers.get("retry-after")), str(exc.status_code)
            return Result(error=error), error, None, ""
        except openai.APITimeoutError:
            self.counters["retry_timeout"] += 1
            return None, f"timeout after {self.timeout:g}s", None, "timeout"
        except openai.APIConnectionError as exc:
            self.counters["retry_connection"] += 1
            cause = type(exc.__cause__).__name__ if exc.__cause__ is not None else ""
            why = "connect" if "Connect" in cause else "connection"
            return None, self._redact(f"{type(exc).__name__}: {exc} {cause}".strip()), None, why
        self._reached = True
        return self._completed(_parse(response.model_dump_json().encode()))

    # ---------------------------------------------------------------- public
    async def _one(self, request: Request) -> Result:
        if self.pool is not None:
            return await self._one_pooled(request)
        payload: dict[str, Any] | bytes = self._payload(request)
        estimate = self._estimate_tokens(request)
        if self.http_client == "aiohttp":
            # Encoded once per request, not per attempt, and sent as bytes: aiohttp's JsonPayload wrapper
            # cost ~5% of the client's CPU at 1,000 req/s. The session sets the JSON content type.
            payload = json.dumps(payload).encode()
            attempt_fn = self._attempt_aiohttp
        else:
            attempt_fn = self._attempt_sdk
        error, why = "", ""
        async with self._limit:
            for attempt in range(self.max_retries + 1):
                await self.limiter.acquire(estimate)
                result, error, retry_after, why = await attempt_fn(payload)
                if result is not None:
                    if result.ok:
                        self.limiter.settle(estimate, result.prompt_tokens + result.completion_tokens)
                    else:
                        self.counters["failed"] += 1
                    return result
                if attempt == self.max_retries:
                    break
                # Retry-After is honoured by the request that got it. A global pause would stall
                # every other request behind proxies that 429 single requests (measured: 20x slower).
                await self._wait(self._delay(retry_after, attempt), why)
        self.counters["failed"] += 1
        if why == "connect":
            self._unanswered(error)
        return Result(error=f"{error} (after {self.max_retries + 1} attempts)")

    async def _one_pooled(self, request: Request) -> Result:
        """One request over the endpoint pool: each attempt goes to the pool's pick. An attempt lost to an
        endpoint that this attempt ejected, or that answered 429, moves to another endpoint at once and
        does not count as a retry (at most once per endpoint per request)."""
        payload = self._payload(request)
        bodies: dict[str, bytes] = {}  # per served model name (an endpoint may name the model its own way)
        estimate = self._estimate_tokens(request)
        assert self.pool is not None
        error, why = "", ""
        attempt, free_moves = 0, len(self.pool.endpoints)
        async with self._limit:
            while True:
                await self.limiter.acquire(estimate)
                endpoint = await self.pool.acquire()
                name = endpoint.model or self.model
                body = bodies.get(name)
                if body is None:
                    body = bodies[name] = json.dumps({**payload, "model": name}).encode()
                started = time.monotonic()
                try:
                    result, error, retry_after, why = await self._attempt_aiohttp(body, endpoint.url)
                except BaseException:
                    self.pool.release(endpoint, "final")  # fatal, or cancelled: the request leaves this endpoint
                    raise
                if result is not None:
                    if result.ok:
                        self.pool.release(endpoint, "ok", time.monotonic() - started, result.prompt_tokens,
                                          result.completion_tokens)
                        self.limiter.settle(estimate, result.prompt_tokens + result.completion_tokens)
                    else:
                        self.pool.release(endpoint, "final")
                        self.counters["failed"] += 1
                    return result
                outcome = "connect" if why == "connect" else "429" if why == "429" else "failed"
                delay = self._delay(retry_after, attempt) if outcome == "429" else None
                moved = self.pool.release(endpoint, outcome, retry_after=delay)
                if (moved or outcome == "429") and free_moves > 0 and self.pool.up > (0 if moved else 1):
                    free_moves -= 1
                    self.counters["moved_endpoint"] += 1
                    continue
                if attempt == self.max_retries:
                    break
                await self._wait(delay if delay is not None else self._backoff(attempt), why)
                attempt += 1
        self.counters["failed"] += 1
        if why == "connect":
            self._unanswered(error)
        return Result(error=f"{error} (after {attempt + 1} attempts)")

    async def _probe(self, url: str) -> bool:
        """Is an ejected endpoint back? Its GET /models answers 200."""
        import aiohttp

        session = self._session_for_loop()
        try:
            async with session.get(f"{url}/models", timeout=aiohttp.ClientTimeout(total=5)) as resp:
                return resp.status == 200
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    def endpoint_stats(self) -> dict[str, dict[str, Any]] | None:
        """Per endpoint: calls, failures, mean latency, tokens, ejections, re-admissions (several endpoints only)."""
        return self.pool.stats() if self.pool is not None else None

    def endpoints_up(self) -> tuple[int, int] | None:
        """(endpoints admitted, endpoints) for the progress line; None with one endpoint."""
        return (self.pool.up, len(self.pool.endpoints)) if self.pool is not None else None

    async def generate(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None


def chat_body(model: str, request: Request, send_seed: bool = True) -> dict[str, Any]:
    """A chat-completions request body; a provider batch (openai_batch.py) sends the very same body."""
    s = request.sampling
    payload: dict[str, Any] = {
        "model": model, "messages": request.messages,
        "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
    }
    if send_seed and s.seed is not None:
        payload["seed"] = s.seed
    return payload


def _parse(body: bytes) -> Result:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return Result(error=f"malformed response: {body[:200]!r}")
    usage = data.get("usage") or {}
    content = (choice.get("message") or {}).get("content")
    result = Result(
        text=content or "",
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        finish_reason=choice.get("finish_reason"),
    )
    if not content:  # null or "": never a success (the caller retries it)
        result.error = (f"{EMPTY_COMPLETION} (content {'null' if content is None else 'empty'}, "
                        f"finish_reason {result.finish_reason!r})")
    return result
