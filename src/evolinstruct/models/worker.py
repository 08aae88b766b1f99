"""A thread that owns a blocking engine and serves batches of queued requests to async callers.

Engines with a blocking batch API (vLLM's `LLM.chat`, llama.cpp) sit behind this: whatever requests
are waiting when the engine is free form its next batch, so concurrent callers share engine calls.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import threading
from collections.abc import Callable

from .base import Request, Result

log = logging.getLogger(__name__)


class BatchWorker:
    def __init__(self, run_batch: Callable[[list[Request]], list[Result]], max_batch: int, name: str) -> None:
        self._run_batch = run_batch
        self._max_batch = max_batch
        self._queue: queue.Queue[tuple[Request, concurrent.futures.Future] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    async def generate(self, requests: list[Request]) -> list[Result]:
        futures = []
        for request in requests:
            future: concurrent.futures.Future = concurrent.futures.Future()
            self._queue.put((request, future))
            futures.append(asyncio.wrap_future(future))
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join, 60)

    def _serve(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # finish this batch, then stop
                    break
                batch.append(nxt)
            try:
                results = self._run_batch([request for request, _ in batch])
            except Exception as exc:  # the engine failed: every request of this batch gets the error
                log.exception("engine batch failed")
                results = [Result(error=f"{type(exc).__name__}: {exc}") for _ in batch]
            for (_, future), result in zip(batch, results, strict=True):
                future.set_result(result)
