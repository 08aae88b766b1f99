"""Request slots handed out by priority: the chain with the most calls still ahead goes first.

Every seed is a chain of dependent calls. First come, first served lets some chains drift ahead, and
the run then ends on a tail of stragglers with idle slots. Serving the least advanced chain first
keeps chains level, so they finish together and the slots stay full to the end (about +5% of ideal
throughput in the scheduler model of bench/run.py). Priority changes only when a request is sent,
never what is sent, so results stay deterministic.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools


class PrioritySlots:
    def __init__(self, slots: int) -> None:
        self.free = slots
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()

    async def acquire(self, remaining: int) -> None:
        """Wait for a slot; `remaining` is how many calls the caller's chain has left after this one."""
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (-remaining, next(self._order), future))
        try:
            await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled():
                self.release()  # the slot was handed over just as we were cancelled: pass it on
            raise

    def release(self) -> None:
        while self._waiters:
            _, _, future = heapq.heappop(self._waiters)
            if not future.done():
                future.set_result(None)
                return
        self.free += 1

    def slot(self, remaining: int) -> _Slot:
        return _Slot(self, remaining)


class _Slot:
    def __init__(self, slots: PrioritySlots, remaining: int) -> None:
        self.slots, self.remaining = slots, remaining

    async def __aenter__(self) -> None:
        await self.slots.acquire(self.remaining)

    async def __aexit__(self, *exc: object) -> None:
        self.slots.release()
