"""Requests-per-minute and tokens-per-minute caps."""

from __future__ import annotations

import asyncio
import time


class TokenBucket:
    """Refills at `per_minute / 60` per second; holds at most one second's worth (or one request's need)."""

    def __init__(self, per_minute: float) -> None:
        self.rate = per_minute / 60.0
        self.capacity = max(1.0, self.rate)
        self.level = self.capacity
        self.updated = time.monotonic()

    def wait_time(self, amount: float) -> float:
        now = time.monotonic()
        self.level = min(max(self.capacity, amount), self.level + (now - self.updated) * self.rate)
        self.updated = now
        if self.level >= amount:
            return 0.0
        return (amount - self.level) / self.rate

    def take(self, amount: float) -> None:
        self.level -= amount

    def refund(self, amount: float) -> None:
        self.level = min(self.capacity, self.level + amount)


class RateLimiter:
    def __init__(self, rpm: float | None = None, tpm: float | None = None) -> None:
        self.requests = TokenBucket(rpm) if rpm else None
        self.tokens = TokenBucket(tpm) if tpm else None
        self._lock = asyncio.Lock()

    async def acquire(self, tokens: float = 0.0) -> None:
        if not (self.requests or self.tokens):
            return
        async with self._lock:  # first come, first served
            while True:
                wait = 0.0
                if self.requests:
                    wait = max(wait, self.requests.wait_time(1.0))
                if self.tokens:
                    wait = max(wait, self.tokens.wait_time(tokens))
                if wait <= 0:
                    break
                await asyncio.sleep(wait)
            if self.requests:
                self.requests.take(1.0)
            if self.tokens:
                self.tokens.take(tokens)

    def settle(self, estimated: float, used: float) -> None:
        """Give back what a request reserved but did not use (max_tokens is an upper bound)."""
        if self.tokens and estimated > used:
            self.tokens.refund(estimated - used)
