"""OpenAI's Batch API through the openai SDK: a JSONL file of chat-completions requests (Files API,
purpose "batch"), a batch over it (`/v1/batches`, 24 h window), its output and error files.

Each line's body is exactly what the online backend sends (`chat_body`), so a batch run and an online run
ask the same questions. custom_id is the run store's request key (64 hex characters). The batch's metadata
carries the run's local batch id, so a run killed between creating the batch and recording its id finds it
again (`find`) instead of submitting it twice.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from ..redact import redact
from .base import BackendError, FatalBackendError, ModelSpec, Request, Result, Transport
from .batchapi import BatchStatus, BatchTooLarge, LineResult, TransientBatchError
from .openai import EMPTY_COMPLETION, _parse, chat_body, check_base_url, server_message

RUNNING = ("validating", "in_progress", "finalizing", "cancelling")
ENDED = ("completed", "expired", "cancelled")
RETRY_CODES = ("batch_expired", "batch_cancelled", "server_error", "rate_limit_exceeded", "timeout")
META_KEY = "evolinstruct_batch"
FIND_LIMIT = 1000  # batches looked through for one created by a killed run


class OpenAIBatchAPI:
    provider = "openai"
    max_requests = 50_000
    max_bytes = 200 * 1024 * 1024
    default_endpoint = "https://api.openai.com/v1"

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> OpenAIBatchAPI:
        return cls(spec.base_url, spec.api_key_env, transport.request_timeout)

    def __init__(self, base_url: str | None, api_key_env: str = "OPENAI_API_KEY", timeout: float = 600.0) -> None:
        check_base_url(base_url)
        key = os.environ.get(api_key_env)
        if not key:
            if base_url is None:
                raise BackendError(f"no API key: set the environment variable {api_key_env} (or pass --api-key-env NAME)")
            key = "not-needed"
        import openai

        self.base_url = (base_url or self.default_endpoint).rstrip("/")
        self.api_key_env = api_key_env
        self._key = key
        self.client = openai.AsyncOpenAI(api_key=key, base_url=self.base_url, timeout=timeout, max_retries=2)

    def line(self, custom_id: str, model: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
                "body": chat_body(model, request)}

    async def _call(self, what: str, coro: Any) -> Any:
        """One SDK call, its errors sorted: the key (fatal), a size limit, or worth retrying."""
        import openai

        try:
            return await coro
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            message = redact(server_message(exc.response.text), (self._key,))
            raise FatalBackendError(f"HTTP {exc.status_code} from {self.base_url} ({what}): {message} (the server "
                                    f"refused the key: check {self.api_key_env}); everything finished so far is "
                                    "stored: rerun the same command to resume") from None
        except openai.APIStatusError as exc:
            message = redact(server_message(exc.response.text), (self._key,))
            if exc.status_code in (400, 413) and any(w in message.lower() for w in ("limit", "too large", "exceed")):
                raise BatchTooLarge(message) from None
            if exc.status_code < 500 and exc.status_code not in (408, 409, 429):
                raise BackendError(f"HTTP {exc.status_code} from {self.base_url} ({what}): {message}") from None
            raise TransientBatchError(f"HTTP {exc.status_code} ({what}): {message}") from None
        except (openai.APIConnectionError, openai.APITimeoutError) as exc:
            raise TransientBatchError(redact(f"{what}: {type(exc).__name__}: {exc}", (self._key,))) from None

    async def submit(self, uid: str, lines: list[dict[str, Any]], on_uploaded: Callable[[str], None]) -> str:
        data = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        uploaded = await self._call("upload", self.client.files.create(file=(f"{uid}.jsonl", data), purpose="batch"))
        on_uploaded(uploaded.id)
        # Not retried by the SDK: a create whose answer was lost may have made the batch, and a second create
        # would pay for it twice; the collector looks it up (find) before it creates another.
        batch = await self._call("create batch", self.client.with_options(max_retries=0).batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h",
            metadata={META_KEY: uid}))
        return batch.id

    async def find(self, uid: str, file_id: str | None, created: float, requests: int,
                   taken: frozenset[str] = frozenset()) -> str | None:
        if file_id is None:
            return None  # no file, so no batch
        seen = 0
        async for batch in await self._call("list batches", self.client.batches.list(limit=100)):
            if batch.id not in taken and (batch.input_file_id == file_id
                                          or (batch.metadata or {}).get(META_KEY) == uid):
                return batch.id
            seen += 1
            if seen >= FIND_LIMIT:
                break
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        batch = await self._call("retrieve batch", self.client.batches.retrieve(batch_id))
        counts = batch.request_counts.model_dump() if batch.request_counts else {}
        if batch.status in RUNNING:
            return BatchStatus("running", batch.status, counts)
        if batch.status in ENDED:
            return BatchStatus("ended", batch.status, counts)
        errors = [(e.code or "", e.message or "") for e in (batch.errors.data if batch.errors and batch.errors.data else [])]
        # The provider's words reach the store (a split's reason) and the log: never with a key in them.
        text = redact("; ".join(f"{c}: {m}" for c, m in errors), (self._key,))[:300] or batch.status
        too_large = any("limit" in c or "too_large" in c or "exceed" in m.lower() for c, m in errors)
        return BatchStatus("failed", batch.status, counts, error=text, too_large=too_large)

    async def results(self, batch_id: str) -> dict[str, LineResult]:
        batch = await self._call("retrieve batch", self.client.batches.retrieve(batch_id))
        out: dict[str, LineResult] = {}
        for file_id in (batch.output_file_id, batch.error_file_id):
            if not file_id:
                continue
            content = await self._call("download results", self.client.files.content(file_id))
            for raw in content.content.splitlines():
                if raw.strip():
                    custom_id, line = self._line(json.loads(raw))
                    out[custom_id] = line
        return out

    def _line(self, data: dict[str, Any]) -> tuple[str, LineResult]:
        custom_id = data.get("custom_id") or ""
        response = data.get("response") or {}
        status = response.get("status_code")
        if status == 200:
            result = _parse(json.dumps(response.get("body") or {}).encode())
            retry = not result.ok and (result.error or "").startswith(EMPTY_COMPLETION)
            if not result.ok:
                result.error = redact(result.error or "", (self._key,))
            return custom_id, LineResult(result, retryable=retry)
        error = data.get("error") or (response.get("body") or {}).get("error") or {}
        code = str(error.get("code") or status or "error") if isinstance(error, dict) else str(error)
        message = error.get("message", "") if isinstance(error, dict) else ""
        retry = (isinstance(status, int) and (status >= 500 or status in (408, 429))) or code in RETRY_CODES
        text = redact(f"batch line error {code}: {message}"[:300], (self._key,))
        return custom_id, LineResult(Result(error=text), retryable=retry)

    async def aclose(self) -> None:
        await self.client.close()
