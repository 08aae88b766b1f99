"""Any OpenAI-compatible chat endpoint: OpenAI, vLLM, SGLang, TGI, Ollama, llama.cpp's server."""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

from .base import BackendError, Request, Result

log = logging.getLogger(__name__)


class OpenAIBackend:
    name = "openai"

    def __init__(
        self,
        model: str | None,
        base_url: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 32,
        timeout: float = 600.0,
        max_retries: int = 3,
        send_seed: bool = True,
    ) -> None:
        try:
            import openai
        except ImportError as exc:  # pragma: no cover - openai is a core dependency
            raise BackendError("the openai backend needs the 'openai' package: pip install openai") from exc
        if not model:
            raise BackendError("the openai backend needs --model (the model name the server serves)")
        api_key = os.environ.get(api_key_env)
        if not api_key:
            if base_url is None:
                raise BackendError(f"no API key: set the environment variable {api_key_env} (or pass --api-key-env NAME)")
            api_key = "not-needed"  # local servers (vLLM, llama.cpp, Ollama) accept any key
        self.model = model
        self.base_url = base_url
        self.send_seed = send_seed
        self._limit = asyncio.Semaphore(concurrency)
        self._client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, timeout=timeout, max_retries=max_retries
        )

    async def _one(self, request: Request) -> Result:
        s = request.sampling
        params: dict[str, Any] = {"temperature": s.temperature, "top_p": s.top_p, "max_tokens": s.max_tokens}
        if self.send_seed and s.seed is not None:
            params["seed"] = s.seed
        async with self._limit:
            try:
                response = await self._client.chat.completions.create(
                    model=self.model, messages=request.messages, **params
                )
            except Exception as exc:  # every failure becomes this request's error, never the batch's
                return Result(error=f"{type(exc).__name__}: {exc}")
        if not response.choices:
            return Result(error="empty response: no choices")
        choice = response.choices[0]
        usage = response.usage
        return Result(
            text=choice.message.content or "",
            prompt_tokens=getattr(usage, "prompt_tokens", 0) or 0,
            completion_tokens=getattr(usage, "completion_tokens", 0) or 0,
            finish_reason=choice.finish_reason,
        )

    async def generate(self, requests: list[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in requests)))

    async def aclose(self) -> None:
        await self._client.close()
