"""Anthropic's native Messages API through the anthropic SDK: online (`--backend anthropic`) and in Message
Batches (`--batch anthropic`, `/v1/messages/batches`).

The key comes from ANTHROPIC_API_KEY (or --api-key-env); the endpoint from --base-url (default
https://api.anthropic.com). System messages go in the top-level `system` field. Sampling: max_tokens only;
the Messages API of current models (and the SDK) takes no temperature, top_p or seed, so --temperature and
--top-p do not reach the model (they still key the stored calls).
A response cut off at max_tokens has finish_reason "length", as for the other backends.
custom_id in a batch is the run store's request key (64 hex characters, within ^[a-zA-Z0-9_-]{1,64}$).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections.abc import Callable
from typing import Any

from ..redact import redact
from .base import (
    DEFAULT_KEY_ENV,
    BackendError,
    Capabilities,
    FatalBackendError,
    ModelSpec,
    Request,
    Result,
    Transport,
)
from .batchapi import BatchStatus, BatchTooLarge, LineResult, TransientBatchError

KEY_ENV = "ANTHROPIC_API_KEY"
RETRY_TYPES = ("api_error", "overloaded_error", "rate_limit_error", "timeout_error")
FIND_LIMIT = 1000


def _key(spec_env: str, base_url: str | None) -> tuple[str, str]:
    env = KEY_ENV if spec_env == DEFAULT_KEY_ENV else spec_env  # the default names OpenAI's variable
    key = os.environ.get(env)
    if not key:
        if base_url is None:
            raise BackendError(f"no API key: set the environment variable {env} (or pass --api-key-env NAME)")
        key = "not-needed"
    return env, key


def params(model: str, request: Request) -> dict[str, Any]:
    """Messages API parameters of a request."""
    system = "\n\n".join(m["content"] for m in request.messages if m.get("role") == "system")
    messages = [m for m in request.messages if m.get("role") != "system"]
    out: dict[str, Any] = {"model": model, "max_tokens": request.sampling.max_tokens, "messages": messages}
    if system:
        out["system"] = system
    return out


def message_result(message: Any) -> Result:
    text = "".join(getattr(block, "text", "") for block in message.content or [])
    usage = message.usage
    finish = "length" if message.stop_reason == "max_tokens" else "stop"
    result = Result(text=text, prompt_tokens=usage.input_tokens or 0, completion_tokens=usage.output_tokens or 0,
                    finish_reason=finish)
    if not text:
        result.error = f"empty completion (stop_reason {message.stop_reason!r})"
    return result


class _Client:
    def __init__(self, spec: ModelSpec, transport: Transport) -> None:
        try:
            import anthropic
        except ImportError:
            raise BackendError("the anthropic backend needs the anthropic SDK: pip install 'evolinstruct[anthropic]'") from None
        self.base_url = spec.base_url
        self.api_key_env, self._key = _key(spec.api_key_env, spec.base_url)
        self.client = anthropic.AsyncAnthropic(api_key=self._key, base_url=spec.base_url,
                                               timeout=transport.request_timeout, max_retries=transport.max_retries)

    def _redact(self, text: str) -> str:
        return redact(text, (self._key,))

    def _fatal(self, exc: Any, what: str) -> FatalBackendError:
        return FatalBackendError(f"HTTP {exc.status_code} from {self.base_url or 'api.anthropic.com'} ({what}): "
                                 f"{self._redact(str(exc.message))[:300]} (the server refused the key: check "
                                 f"{self.api_key_env}); everything finished so far is stored: rerun the same command "
                                 "to resume")

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicBackend(_Client):
    name = "anthropic"
    capabilities = Capabilities(needs_model=True)

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> AnthropicBackend:
        return cls(spec, transport)

    def __init__(self, spec: ModelSpec, transport: Transport) -> None:
        super().__init__(spec, transport)
        self.model = spec.model or ""
        self._limit = asyncio.Semaphore(transport.concurrency)

    async def _one(self, request: Request) -> Result:
        import anthropic

        async with self._limit:
            try:
                message = await self.client.messages.create(**params(self.model, request))
            except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
                raise self._fatal(exc, "messages") from None
            except anthropic.NotFoundError as exc:
                raise FatalBackendError(f"HTTP 404 from {self.base_url or 'api.anthropic.com'}: "
                                        f"{self._redact(str(exc.message))[:300]} (check --model)") from None
            except anthropic.APIError as exc:
                return Result(error=self._redact(f"{type(exc).__name__}: {exc}")[:500])
        return message_result(message)

    async def generate(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))


class AnthropicBatchAPI(_Client):
    provider = "anthropic"
    max_requests = 100_000
    max_bytes = 256 * 1024 * 1024

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> AnthropicBatchAPI:
        return cls(spec, transport)

    def line(self, custom_id: str, model: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "params": params(model, request)}

    async def _call(self, what: str, coro: Any) -> Any:
        import anthropic

        try:
            return await coro
        except (anthropic.AuthenticationError, anthropic.PermissionDeniedError) as exc:
            raise self._fatal(exc, what) from None
        except anthropic.APIStatusError as exc:
            message = self._redact(str(exc.message))[:300]
            if exc.status_code == 413 or "too large" in message.lower() or "exceed" in message.lower():
                raise BatchTooLarge(message) from None
            if exc.status_code >= 500 or exc.status_code in (408, 409, 429, 529):
                raise TransientBatchError(f"HTTP {exc.status_code} ({what}): {message}") from None
            raise BackendError(f"HTTP {exc.status_code} ({what}): {message}") from None
        except (anthropic.APIConnectionError, anthropic.APITimeoutError) as exc:
            raise TransientBatchError(self._redact(f"{what}: {type(exc).__name__}: {exc}")) from None

    async def submit(self, uid: str, lines: list[dict[str, Any]], on_uploaded: Callable[[str], None]) -> str:
        on_uploaded("")  # no file: from here on a batch may exist, and a killed run looks for it (find)
        # Not retried by the SDK: a create whose answer was lost may have made the batch (see openai_batch.py).
        batch = await self._call("create batch",
                                 self.client.with_options(max_retries=0).messages.batches.create(requests=lines))
        return batch.id

    async def find(self, uid: str, file_id: str | None, created: float, requests: int,
                   taken: frozenset[str] = frozenset()) -> str | None:
        """A batch created by a killed run before it recorded the id: Message Batches carry no metadata, so
        the newest batch created since the run recorded it, with as many requests, that no other batch of the run
        has claimed (`taken`: two same-sized parts of a round, killed before either id was recorded)."""
        seen = 0
        since = dt.datetime.fromtimestamp(created - 5, dt.UTC)
        async for batch in await self._call("list batches", self.client.messages.batches.list(limit=100)):
            c = batch.request_counts
            if batch.id not in taken and batch.created_at >= since and c.processing + c.succeeded + c.errored + c.canceled + c.expired == requests:
                return batch.id
            seen += 1
            if seen >= FIND_LIMIT or batch.created_at < since:
                break
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        batch = await self._call("retrieve batch", self.client.messages.batches.retrieve(batch_id))
        counts = batch.request_counts.model_dump()
        state = "ended" if batch.processing_status == "ended" else "running"
        return BatchStatus(state, batch.processing_status, counts)

    async def results(self, batch_id: str) -> dict[str, LineResult]:
        out: dict[str, LineResult] = {}
        async for item in await self._call("download results", self.client.messages.batches.results(batch_id)):
            result = item.result
            if result.type == "succeeded":
                line = message_result(result.message)
                out[item.custom_id] = LineResult(line, retryable=not line.ok)
            elif result.type == "errored":
                error = getattr(result.error, "error", None)
                kind = getattr(error, "type", "error")
                message = self._redact(str(getattr(error, "message", "")))[:300]
                out[item.custom_id] = LineResult(Result(error=f"batch line error {kind}: {message}"),
                                                 retryable=kind in RETRY_TYPES)
            else:  # canceled, expired: not done, submitted again
                out[item.custom_id] = LineResult(Result(error=f"batch line {result.type}"), retryable=True)
        return out
