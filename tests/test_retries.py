"""Retries, Retry-After and rate caps, with faults injected by a proxy in front of the real llama.cpp server."""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from aiohttp import web

from evolinstruct.models import Request, Sampling
from evolinstruct.models.openai import OpenAIBackend, retry_after_seconds
from evolinstruct.models.ratelimit import RateLimiter


class FaultProxy:
    """Forwards to the real server, except that the first requests get the scripted faults."""

    def __init__(self, upstream: str, script: list[str]) -> None:
        self.upstream, self.script, self.seen = upstream, list(script), []

    async def handle(self, request: web.Request) -> web.StreamResponse:
        fault = self.script.pop(0) if self.script else "ok"
        self.seen.append((fault, time.monotonic()))
        if fault == "429":
            return web.json_response({"error": "slow down"}, status=429, headers={"Retry-After": "1"})
        if fault == "500":
            return web.json_response({"error": "boom"}, status=500)
        if fault == "400":
            return web.json_response({"error": "bad request"}, status=400)
        if fault == "drop":
            request.transport.close()  # a reset connection, no response
            return web.Response()
        body = await request.read()
        async with aiohttp.ClientSession() as session, session.post(
            f"{self.upstream}/chat/completions", data=body, headers={"Content-Type": "application/json"}
        ) as resp:
            return web.Response(body=await resp.read(), status=resp.status, content_type="application/json")


async def with_proxy(upstream: str, script: list[str], fn):
    proxy = FaultProxy(upstream, script)
    app = web.Application()
    app.router.add_post("/v1/chat/completions", proxy.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        return await fn(f"http://127.0.0.1:{port}/v1"), proxy
    finally:
        await runner.cleanup()


def ask(text: str) -> Request:
    return Request([{"role": "user", "content": text}], Sampling(temperature=0, max_tokens=4))


@pytest.mark.slow
def test_retries_429_500_and_resets_then_succeeds(llama_server):
    async def run(url):
        backend = OpenAIBackend(model=llama_server.model, base_url=url, max_retries=4, backoff_base=0.05, timeout=60)
        try:
            started = time.monotonic()
            [result] = await backend.generate([ask("Say hi.")])
            return result, time.monotonic() - started, dict(backend.counters)
        finally:
            await backend.aclose()

    (result, elapsed, counters), proxy = asyncio.run(with_proxy(llama_server.base_url, ["429", "500", "drop"], run))
    assert result.ok and result.text, result
    assert [f for f, _ in proxy.seen] == ["429", "500", "drop", "ok"]
    assert proxy.seen[1][1] - proxy.seen[0][1] >= 0.95  # Retry-After: 1 was honoured
    assert counters["retry_http_429"] == 1 and counters["retry_http_500"] == 1 and counters["retry_connection"] == 1
    assert elapsed >= 1.0


@pytest.mark.slow
def test_gives_up_with_an_error_result_and_does_not_retry_4xx(llama_server):
    async def run(url):
        backend = OpenAIBackend(model=llama_server.model, base_url=url, max_retries=2, backoff_base=0.01)
        try:
            return await backend.generate([ask("a"), ask("b")])
        finally:
            await backend.aclose()

    results, proxy = asyncio.run(with_proxy(llama_server.base_url, ["400", "500", "500", "500"], run))
    errors = sorted(r.error for r in results)
    assert errors[0].startswith("HTTP 400") and "after" not in errors[0]  # a 400 is final at once
    assert errors[1].startswith("HTTP 500") and "after 3 attempts" in errors[1]
    assert len(proxy.seen) == 4


def test_retry_after_parsing():
    assert retry_after_seconds("2") == 2.0
    assert retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") <= 0  # a date in the past: no wait


def test_requests_per_minute_cap_spaces_requests():
    async def run():
        limiter = RateLimiter(rpm=600)  # 10 per second, a burst of at most one second's worth
        started = time.monotonic()
        for _ in range(25):
            await limiter.acquire()
        return time.monotonic() - started

    elapsed = asyncio.run(run())
    assert 1.3 <= elapsed <= 3.0  # 10 at once, then 15 more at 10/s


def test_a_retry_after_over_the_cap_waits_the_cap():
    backend = OpenAIBackend(model="m", base_url="http://127.0.0.1:9/v1", max_retry_after=5)
    assert backend._delay(100000, 0) == 5 and backend.counters["retry_after_capped"] == 1
    assert backend._delay(2, 0) == 2 and backend.counters["retry_after_capped"] == 1
    assert 0 <= backend._delay(None, 1) <= 1.0  # no Retry-After: exponential backoff with jitter
