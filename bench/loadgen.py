#!/usr/bin/env python3
"""A minimal closed-loop load generator for the sim server (aiohttp client, no retries).

`python bench/loadgen.py --base-url http://127.0.0.1:PORT/v1 --connections 1024 --seconds 10`
keeps `--connections` requests in flight for `--seconds` (or `--requests` in total), each a distinct
small chat request, and prints JSON {requests, ok, errors, seconds, req_per_s}. Used to check that
the sim server itself sustains the request rates the benchmark asks of it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

import aiohttp


async def run(base_url: str, connections: int, seconds: float, requests: int, kind: str) -> dict:
    url = base_url.rstrip("/") + "/chat/completions"
    connector = aiohttp.TCPConnector(limit=connections, limit_per_host=connections)
    counter = 0
    ok = errors = 0
    deadline = time.perf_counter() + seconds
    prompts = {
        "answer": "Give three tips for staying healthy. ({i})",
        "evolve": "I want you act as a Prompt Rewriter.\n#Given Prompt#:\nExplain photosynthesis {i}\n#Rewritten Prompt#:\n",
        "equality": "Here are two Instructions ... ({i}) Your Judgement (Just answer: Equal or Not Equal.):",
    }
    template = prompts[kind]

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal counter, ok, errors
        while time.perf_counter() < deadline and (requests <= 0 or counter < requests):
            i = counter
            counter += 1
            body = {"model": "sim", "messages": [{"role": "user", "content": template.format(i=i)}], "max_tokens": 256}
            try:
                async with session.post(url, json=body) as r:
                    await r.read()
                    if r.status == 200:
                        ok += 1
                    else:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(connections)))
        elapsed = time.perf_counter() - t0
    return {"requests": ok + errors, "ok": ok, "errors": errors, "seconds": round(elapsed, 3),
            "req_per_s": round((ok + errors) / elapsed, 1)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--connections", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--requests", type=int, default=0, help="stop after this many (0: time only)")
    p.add_argument("--kind", choices=("answer", "evolve", "equality"), default="answer")
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.base_url, a.connections, a.seconds, a.requests, a.kind))))


if __name__ == "__main__":
    main()
