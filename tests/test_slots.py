"""Request slots go to the chain with the most calls left; cancellation never leaks a slot."""

from __future__ import annotations

import asyncio

from evolinstruct.slots import PrioritySlots


def test_most_remaining_first_then_arrival_order():
    async def run():
        slots = PrioritySlots(1)
        order: list[str] = []
        await slots.acquire(0)  # hold the only slot

        async def want(name: str, remaining: int):
            async with slots.slot(remaining):
                order.append(name)

        tasks = [asyncio.create_task(want(n, r)) for n, r in (("a", 1), ("b", 5), ("c", 5), ("d", 3))]
        await asyncio.sleep(0)
        slots.release()
        await asyncio.gather(*tasks)
        return order, slots.free

    order, free = asyncio.run(run())
    assert order == ["b", "c", "d", "a"]
    assert free == 1


def test_cancelled_waiter_does_not_leak_the_slot():
    async def run():
        slots = PrioritySlots(1)
        await slots.acquire(0)
        waiter = asyncio.create_task(slots.acquire(9))
        await asyncio.sleep(0)
        slots.release()  # hands the slot to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        await asyncio.gather(waiter, return_exceptions=True)
        await asyncio.wait_for(slots.acquire(0), timeout=1)  # the slot came back
        return slots.free

    assert asyncio.run(run()) == 0
