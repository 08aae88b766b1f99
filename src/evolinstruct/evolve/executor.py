"""The executor: runs many chains at once on one asyncio loop, with no barriers between them.

It knows nothing of what a chain does (chain.py) or where results go; it starts chains as seeds arrive,
keeps at most `max_chains` in progress (requests in flight are bounded separately, by the calls'
slots), stops starting new ones when a budget is exhausted, and surfaces a programming error at once.
A shard (`shard` of `shards`) runs only the seeds whose record id hashes to it, so N processes or
machines can split one seed file with no coordination (the seam a distributed executor plugs into).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Iterator

from ..calls import BudgetExhausted
from ..records import Seed, seed_record_id, stable_hash


def shard_of(seed: Seed, shards: int) -> int:
    """The shard a seed belongs to: a function of its record id alone, so it never moves."""
    if shards == 1:
        return 0
    return int(stable_hash("shard", seed_record_id(seed.index, seed.instruction, seed.input)), 16) % shards


class Executor:
    def __init__(self, concurrency: int, max_chains: int | None = None, shard: int = 0, shards: int = 1) -> None:
        self.concurrency = concurrency
        self.max_chains = max_chains
        self.shard, self.shards = shard, shards

    def mine(self, seeds: Iterable[Seed]) -> Iterator[Seed]:
        """The seeds of this executor's shard (all of them for one shard)."""
        if self.shards == 1:
            yield from seeds
            return
        for seed in seeds:
            if shard_of(seed, self.shards) == self.shard:
                yield seed

    async def run(self, seeds: Iterable[Seed], run_chain: Callable[[Seed], Awaitable[None]]) -> str | None:
        """Run `run_chain` on every seed of this shard, pulling seeds lazily.

        Returns the budget that stopped the run early ("max_calls" / "max_cost"), or None. On a stop,
        no new chain starts and the running ones end at their next call; every finished call is stored.
        """
        # More chains than request slots, so that slots stay full while chains wait on each other;
        # bounded, so that a 52K-seed file never becomes 52K tasks.
        limit = max(1, self.max_chains or 4 * self.concurrency)
        chain_slots = asyncio.Semaphore(limit)
        in_flight: set[asyncio.Task[None]] = set()
        stopped: str | None = None
        failure: BaseException | None = None
        drained = asyncio.Event()
        feeding = True  # while seeds are still being started, an empty in_flight is not the end

        def finished(task: asyncio.Task[None]) -> None:  # O(1) per chain, however many run
            nonlocal stopped, failure
            in_flight.discard(task)
            chain_slots.release()
            if task.cancelled():
                return
            exc = task.exception()
            if isinstance(exc, BudgetExhausted):
                stopped = stopped or str(exc)
            elif exc is not None and failure is None:
                failure = exc
            if failure or (not feeding and not in_flight):
                drained.set()

        try:
            for seed in self.mine(seeds):
                await chain_slots.acquire()
                if stopped or failure:
                    break
                task = asyncio.create_task(run_chain(seed))
                in_flight.add(task)
                task.add_done_callback(finished)
                # Let the new chain send its first request now: without this, thousands of chains were
                # all set up before the first request left, and the server sat idle for ~0.8 s.
                await asyncio.sleep(0)
            feeding = False
            if in_flight and not failure:
                await drained.wait()
            if failure:
                raise failure  # a programming error: surface it
        finally:
            for task in list(in_flight):
                task.cancel()
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)
        return stopped
