"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, SGLang, TGI, Ollama, llama.cpp's server.

The default HTTP path is a lean aiohttp client: one connection pool sized to the concurrency, JSON in
and out, our own retries. It holds 1,000+ requests in flight on 2 cores, where httpx (the openai SDK's
default transport) degrades past ~32 connections; docs/BENCHMARKS.md has the measurement. The SDK
path (`http_client="sdk"`, optionally over the SDK's aiohttp transport) is kept for comparison.

Retries: 408/409/429/5xx, timeouts and connection errors, with exponential backoff and full jitter;
a 429 waits its Retry-After before its retry. Other 4xx fail at once. A request that
still fails becomes a `Result` with `error`, never an exception for the batch.
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

from .base import BackendError, Capabilities, ModelSpec, Request, Result, Transport
from .ratelimit import RateLimiter

log = logging.getLogger(__name__)

RETRY_STATUS = {408, 409, 429}


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
        )

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
    ) -> None:
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
        self.http_client = http_client
        self.limiter = RateLimiter(rpm, tpm)
        self.counters: Counter = Counter()  # retries and failures by kind, for stats.json
        self._api_key = api_key
        self._limit = asyncio.Semaphore(concurrency)
        self._jitter = random.Random()  # jitter only spreads retries; it never touches results
        self._session: Any = None
        self._timeout: Any = None  # one aiohttp.ClientTimeout, built with the session
        self._sdk: Any = None

    # ---------------------------------------------------------------- plumbing
    def _payload(self, request: Request) -> dict[str, Any]:
        s = request.sampling
        payload: dict[str, Any] = {
            "model": self.model, "messages": request.messages,
            "temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens,
        }
        if self.send_seed and s.seed is not None:
            payload["seed"] = s.seed
        return payload

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
    async def _attempt_aiohttp(self, body: bytes) -> tuple[Result | None, str, float | None]:
        """(result, error, retry_after): a result when done (success or final failure), else a retryable error."""
        import aiohttp

        session = self._session_for_loop()
        if self._timeout is None:
            self._timeout = aiohttp.ClientTimeout(total=self.timeout)
        try:
            async with session.post(f"{self.base_url}/chat/completions", data=body, timeout=self._timeout) as resp:
                if resp.status == 200:
                    return _parse(await resp.read()), "", None
                error = f"HTTP {resp.status}: {(await resp.text(errors='replace'))[:300]}"
                if resp.status in RETRY_STATUS or resp.status >= 500:
                    self.counters[f"retry_http_{resp.status}"] += 1
                    return None, error, retry_after_seconds(resp.headers.get("Retry-After"))
                return Result(error=error), error, None
        except asyncio.TimeoutError:
            self.counters["retry_timeout"] += 1
            return None, f"timeout after {self.timeout:g}s", None
        except (aiohttp.ClientError, ConnectionError, OSError) as exc:
            self.counters["retry_connection"] += 1
            return None, f"{type(exc).__name__}: {exc}", None

    async def _attempt_sdk(self, payload: dict[str, Any]) -> tuple[Result | None, str, float | None]:
        import openai

        client = self._sdk_client()
        try:
            response = await client.chat.completions.create(**payload)
        except openai.APIStatusError as exc:
            error = f"HTTP {exc.status_code}: {str(exc)[:300]}"
            if exc.status_code in RETRY_STATUS or exc.status_code >= 500:
                self.counters[f"retry_http_{exc.status_code}"] += 1
                return None, error, retry_after_seconds(exc.response.headers.get("retry-after"))
            return Result(error=error), error, None
        except (openai.APITimeoutError, openai.APIConnectionError) as exc:
            self.counters["retry_connection"] += 1
            return None, f"{type(exc).__name__}: {exc}", None
        return _parse(response.model_dump_json().encode()), "", None

    # ---------------------------------------------------------------- public
    async def _one(self, request: Request) -> Result:
        payload: dict[str, Any] | bytes = self._payload(request)
        estimate = self._estimate_tokens(request)
        if self.http_client == "aiohttp":
            # Encoded once per request, not per attempt, and sent as bytes: aiohttp's JsonPayload wrapper
            # cost ~5% of the client's CPU at 1,000 req/s. The session sets the JSON content type.
            payload = json.dumps(payload).encode()
            attempt_fn = self._attempt_aiohttp
        else:
            attempt_fn = self._attempt_sdk
        error = ""
        async with self._limit:
            for attempt in range(self.max_retries + 1):
                await self.limiter.acquire(estimate)
                result, error, retry_after = await attempt_fn(payload)
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
                await asyncio.sleep(retry_after if retry_after is not None else self._backoff(attempt))
        self.counters["failed"] += 1
        return Result(error=f"{error} (after {self.max_retries + 1} attempts)")

    async def generate(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None


def _parse(body: bytes) -> Result:
    try:
        data = json.loads(body)
        choice = data["choices"][0]
    except (ValueError, KeyError, IndexError, TypeError):
        return Result(error=f"malformed response: {body[:200]!r}")
    usage = data.get("usage") or {}
    return Result(
        text=(choice.get("message") or {}).get("content") or "",
        prompt_tokens=usage.get("prompt_tokens") or 0,
        completion_tokens=usage.get("completion_tokens") or 0,
        finish_reason=choice.get("finish_reason"),
    )
