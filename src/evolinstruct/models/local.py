"""In-process generation with transformers, batching concurrent requests at the iteration level.

One worker thread owns the model. Requests from any coroutine are queued; at every decoding step the
worker admits waiting requests into the running batch (prefilled separately, then their KV cache is
left-padded and concatenated onto the batch's), and drops finished rows. Each row samples with its own
seeded `torch.Generator`, its own temperature and top-p, so what a request samples does not depend on
which other requests shared its batch (up to floating-point effects of padding).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .base import BackendError, Capabilities, ModelSpec, Request, Result, Transport
from .guide import TOP_CANDIDATES, TokenGuide, head_complete, token_pieces

log = logging.getLogger(__name__)


@dataclass(eq=False)
class _Row:
    request: Request
    future: concurrent.futures.Future
    prompt_ids: list[int]
    generator: Any
    tokens: list[int] = field(default_factory=list)
    guiding: bool = False  # the request has a guide whose head is not complete yet


class LocalBackend:
    name = "local"
    capabilities = Capabilities(guides=True, in_process=True)
    # The cap on rows decoded together, whatever --concurrency says (the value evolve and eval always used).
    MAX_BATCH = 64

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> LocalBackend:
        return cls(model=spec.model or "embedded", max_batch=min(transport.concurrency, cls.MAX_BATCH))

    @staticmethod
    def display_name(model: str | None) -> str:
        from .embedded import display_name

        return display_name(model)

    @classmethod
    def check(cls, spec: ModelSpec) -> None:
        model = spec.model
        if model and model != "embedded" and Path(model).exists() and not (Path(model) / "config.json").exists():
            raise BackendError(f"{model}: not a model directory (no config.json); pass a directory written by "
                               "`evolinstruct train`, a hub id or 'embedded'")

    def __init__(
        self,
        model: str = "embedded",
        max_batch: int = 32,
        device: str | None = None,
        threads: int | None = None,
        **_: Any,
    ) -> None:
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as exc:
            raise BackendError("the local backend needs torch and transformers: pip install 'evolinstruct[local]'") from exc
        from transformers.utils import logging as hf_logging

        from .embedded import resolve_model_path

        hf_logging.disable_progress_bar()  # our own progress display owns the terminal

        path, self.model = resolve_model_path(model)
        self._torch = torch
        if threads:
            torch.set_num_threads(threads)
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = torch.bfloat16 if self.device == "cuda" else torch.float32
        started = time.perf_counter()
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self._model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(self.device).eval()
        log.info("loaded %s in %.1fs on %s", self.model, time.perf_counter() - started, self.device)
        config = self._model.config
        eos = {self.tokenizer.eos_token_id, *(_as_list(config.eos_token_id))}
        gen_config = getattr(self._model, "generation_config", None)
        if gen_config is not None:
            eos |= set(_as_list(gen_config.eos_token_id))
        self._eos = torch.tensor(sorted(e for e in eos if e is not None), device=self.device)
        self._pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self._context = getattr(config, "max_position_embeddings", 4096) or 4096
        # transformers 5.24 renamed forward's `past_key_values` to `cache`; accept both generations.
        params = inspect.signature(self._model.forward).parameters
        self._cache_arg = "cache" if "cache" in params else "past_key_values"
        self.max_batch = max_batch
        self._token_guide: TokenGuide | None = None
        self._queue: queue.Queue[_Row | None] = queue.Queue()
        self._closed = False
        self.steps = 0  # decoding steps taken, for benchmarks
        self.peak_batch = 0
        self._active = 0  # rows in the running batch; the worker admits at most max_batch - _active
        self._worker = threading.Thread(target=self._serve, name="evolinstruct-local", daemon=True)
        self._worker.start()

    # ----------------------------------------------------------------- public, async side
    async def generate(self, requests: list[Request]) -> list[Result]:
        futures = [self.submit(r) for r in requests]
        return list(await asyncio.gather(*(asyncio.wrap_future(f) for f in futures)))

    def submit(self, request: Request) -> concurrent.futures.Future:
        future: concurrent.futures.Future = concurrent.futures.Future()
        if self._closed:
            future.set_result(Result(error="backend closed"))
            return future
        try:
            ids = self._encode(request.messages)
        except Exception as exc:  # a bad chat message fails only its own request
            future.set_result(Result(error=f"cannot encode prompt: {exc}"))
            return future
        budget = self._context - request.sampling.max_tokens
        if len(ids) > budget:
            future.set_result(Result(error=f"prompt of {len(ids)} tokens exceeds the context ({self._context}) minus max_tokens"))
            return future
        generator = self._torch.Generator(device=self.device)
        generator.manual_seed(request.sampling.seed if request.sampling.seed is not None else 0)
        self._queue.put(_Row(request, future, ids, generator, guiding=request.guide is not None))
        return future

    async def aclose(self) -> None:
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._worker.join, 30)

    def _encode(self, messages: list[dict[str, str]]) -> list[int]:
        if self.tokenizer.chat_template:
            encoded = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = encoded["input_ids"] if isinstance(encoded, dict) or hasattr(encoded, "keys") else encoded
            return list(ids)
        text = "\n\n".join(m["content"] for m in messages) + "\n\n"
        return self.tokenizer(text)["input_ids"]

    # ----------------------------------------------------------------- worker thread
    def _serve(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # never leave a caller waiting on a dead worker
            log.exception("local backend worker stopped")
            self._closed = True
            while True:
                try:
                    row = self._queue.get_nowait()
                except queue.Empty:
                    break
                if row is not None and not row.future.done():
                    row.future.set_result(Result(error=f"local backend stopped: {exc}"))
            raise

    def _run(self) -> None:
        torch = self._torch
        with torch.inference_mode():
            rows: list[_Row] = []
            state: dict[str, Any] = {}
            while True:
                waiting = self._take(block=not rows)
                if waiting is None:
                    for row in rows:
                        row.future.set_result(Result(error="backend closed"))
                    return
                try:
                    if waiting:
                        rows, state = self._admit(rows, state, waiting)
                    if rows:
                        rows, state = self._step(rows, state)
                except Exception as exc:  # a crash in the model fails the rows in flight, not the worker
                    log.exception("local generation failed")
                    for row in rows + waiting:
                        if not row.future.done():
                            row.future.set_result(Result(error=f"{type(exc).__name__}: {exc}"))
                    rows, state = [], {}

    def _take(self, block: bool) -> list[_Row] | None:
        """Waiting rows that fit the batch; None when the backend is closing."""
        taken: list[_Row] = []
        room = self.max_batch - self._active
        if room <= 0:
            return taken  # the batch is full: waiting rows join when a row finishes
        try:
            item = self._queue.get(block=block, timeout=None if block else 0)
        except queue.Empty:
            return taken
        while True:
            if item is None:
                return None
            taken.append(item)
            if len(taken) >= room:
                return taken
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return taken

    def _admit(self, rows: list[_Row], state: dict[str, Any], new: list[_Row]) -> tuple[list[_Row], dict[str, Any]]:
        torch = self._torch
        from transformers import DynamicCache

        width = max(len(r.prompt_ids) for r in new)
        ids = torch.full((len(new), width), self._pad, dtype=torch.long)
        mask = torch.zeros((len(new), width), dtype=torch.long)
        for i, r in enumerate(new):
            ids[i, width - len(r.prompt_ids) :] = torch.tensor(r.prompt_ids)
            mask[i, width - len(r.prompt_ids) :] = 1
        ids, mask = ids.to(self.device), mask.to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        cache = DynamicCache()
        out = self._model(
            input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **{self._cache_arg: cache}
        )
        logits = out.logits[:, -1, :]
        new_state = {"cache": cache, "mask": mask, "next_pos": positions[:, -1] + 1, "logits": logits}
        if not rows:
            merged_rows, merged = new, new_state
        else:
            merged_rows, merged = rows + new, self._merge(state, new_state)
        self.peak_batch = max(self.peak_batch, len(merged_rows))
        self._active = len(merged_rows)
        return merged_rows, merged

    def _merge(self, a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """Concatenate two batches along the batch axis, left-padding the shorter KV cache and mask."""
        torch = self._torch
        la, lb = a["mask"].shape[1], b["mask"].shape[1]
        width = max(la, lb)

        def pad(t: Any, length: int, dim: int) -> Any:
            if length == width:
                return t
            shape = list(t.shape)
            shape[dim] = width - length
            return torch.cat([torch.zeros(shape, dtype=t.dtype, device=t.device), t], dim=dim)

        for layer_a, layer_b in zip(a["cache"].layers, b["cache"].layers, strict=True):
            layer_a.keys = torch.cat([pad(layer_a.keys, la, 2), pad(layer_b.keys, lb, 2)], dim=0)
            layer_a.values = torch.cat([pad(layer_a.values, la, 2), pad(layer_b.values, lb, 2)], dim=0)
        return {
            "cache": a["cache"],
            "mask": torch.cat([pad(a["mask"], la, 1), pad(b["mask"], lb, 1)], dim=0),
            "next_pos": torch.cat([a["next_pos"], b["next_pos"]]),
            "logits": torch.cat([a["logits"], b["logits"]], dim=0),
        }

    def _guide(self, row: _Row, logits: Any) -> Any:
        """The row's logits with every token that cannot lead to its guide's head masked out."""
        text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
        if head_complete(row.request.guide, text):
            row.guiding = False
            return logits
        if self._token_guide is None:  # built on the first guided request: about a second for 49K tokens
            self._token_guide = TokenGuide(token_pieces(self.tokenizer), self._eos.tolist())
        ranked = logits.topk(min(TOP_CANDIDATES, logits.shape[-1])).indices.tolist()
        allowed = self._token_guide.allowed(row.request.guide, text, ranked)
        if not allowed:  # the head cannot be reached from here (a bad pattern): stop guiding
            row.guiding = False
            return logits
        masked = self._torch.full_like(logits, float("-inf"))
        index = self._torch.tensor(allowed, device=logits.device)
        masked[index] = logits[index]
        return masked

    def _sample(self, rows: list[_Row], logits: Any) -> list[int]:
        torch = self._torch
        logits = logits.float()
        picks: list[int] = []
        for i, row in enumerate(rows):
            s = row.request.sampling
            if row.guiding:
                logits[i] = self._guide(row, logits[i])
            if s.temperature <= 0:
                picks.append(int(logits[i].argmax()))
                continue
            probs = torch.softmax(logits[i] / s.temperature, dim=-1)
            if s.top_p < 1.0:
                sorted_probs, order = probs.sort(descending=True)
                keep = (sorted_probs.cumsum(0) - sorted_probs) < s.top_p
                sorted_probs = sorted_probs * keep
                choice = torch.multinomial(sorted_probs, 1, generator=row.generator)
                picks.append(int(order[choice]))
            else:
                picks.append(int(torch.multinomial(probs, 1, generator=row.generator)))
        return picks

    def _step(self, rows: list[_Row], state: dict[str, Any]) -> tuple[list[_Row], dict[str, Any]]:
        torch = self._torch
        picks = self._sample(rows, state["logits"])
        keep: list[int] = []
        eos = set(self._eos.tolist())
        for i, (row, token) in enumerate(zip(rows, picks, strict=True)):
            finished = token in eos
            if not finished:
                row.tokens.append(token)
            if finished or len(row.tokens) >= row.request.sampling.max_tokens:
                text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
                row.future.set_result(
                    Result(
                        text=text,
                        prompt_tokens=len(row.prompt_ids),
                        completion_tokens=len(row.tokens),
                        finish_reason="stop" if finished else "length",
                    )
                )
            else:
                keep.append(i)
        if not keep:
            self._active = 0
            return [], {}
        cache, mask, next_pos = state["cache"], state["mask"], state["next_pos"]
        tokens = torch.tensor(picks, device=self.device)
        if len(keep) < len(rows):
            index = torch.tensor(keep, device=self.device)
            cache.batch_select_indices(index)
            mask, next_pos, tokens = mask[index], next_pos[index], tokens[index]
            rows = [rows[i] for i in keep]
            # Columns that are padding for every remaining row are dead weight: drop them.
            live = int(mask.any(dim=0).nonzero()[0])
            if live > 0:
                mask = mask[:, live:]
                for layer in cache.layers:
                    layer.keys, layer.values = layer.keys[:, :, live:], layer.values[:, :, live:]
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=mask.device)], dim=1)
        out = self._model(
            input_ids=tokens[:, None],
            attention_mask=mask,
            position_ids=next_pos[:, None],
            use_cache=True,
            **{self._cache_arg: cache},
        )
        self.steps += 1
        self._active = len(rows)
        return rows, {"cache": cache, "mask": mask, "next_pos": next_pos + 1, "logits": out.logits[:, -1, :]}


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]
