"""vLLM in-process (extra `[vllm]`, GPU machines; import-guarded, never needed by tests or CI).

Requests waiting when the engine is free go to one `LLM.chat(list_of_messages, list_of_sampling_params)`
call, which vLLM batches continuously inside and answers in input order. `SamplingParams.max_tokens`
defaults to 16 in vLLM, so it is always set from the request.
"""

from __future__ import annotations

from typing import Any

from .base import BackendError, Capabilities, ModelSpec, Request, Result, Transport
from .worker import BatchWorker


class VLLMBackend:
    name = "vllm"
    capabilities = Capabilities(in_process=True, needs_model=True)

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> VLLMBackend:
        # The engine batches whatever is waiting; --concurrency bounds how much that is.
        return cls(model=spec.model, max_batch=transport.concurrency)

    @staticmethod
    def display_name(model: str | None) -> str:
        return model or ""

    def __init__(self, model: str | None, max_batch: int = 1024, **engine_args: Any) -> None:
        try:
            from vllm import LLM, SamplingParams
        except ImportError as exc:
            raise BackendError("the vllm backend needs vLLM on a GPU machine: pip install 'evolinstruct[vllm]'") from exc
        if not model:
            raise BackendError("the vllm backend needs --model (a hub id or local path)")
        self.model = model
        self._params = SamplingParams
        known = {k: v for k, v in engine_args.items() if k in ("tensor_parallel_size", "gpu_memory_utilization", "max_model_len", "dtype")}
        self._llm = LLM(model=model, **known)
        self._worker = BatchWorker(self._run_batch, max_batch=max_batch, name="evolinstruct-vllm")

    def _run_batch(self, requests: list[Request]) -> list[Result]:
        params = [
            self._params(temperature=r.sampling.temperature, top_p=r.sampling.top_p,
                         max_tokens=r.sampling.max_tokens, seed=r.sampling.seed)
            for r in requests
        ]
        outputs = self._llm.chat([r.messages for r in requests], params, use_tqdm=False)
        results = []
        for out in outputs:
            completion = out.outputs[0]
            results.append(Result(
                text=completion.text, prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(completion.token_ids), finish_reason=completion.finish_reason,
            ))
        return results

    async def generate(self, requests: list[Request]) -> list[Result]:
        return await self._worker.generate(requests)

    async def aclose(self) -> None:
        await self._worker.aclose()
