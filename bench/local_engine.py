"""Benchmark 3: tokens/s of the embedded model, iteration-level batching against one request at a time.

Both runs send the same 16 concurrent requests (greedy, fixed max tokens) to the in-process local
backend; the unbatched run caps the batch at 1. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time

from evolinstruct.backends import Request, Sampling, make_backend

PROMPTS = [
    "Give three tips for staying healthy.", "Explain photosynthesis to a child.", "Write a haiku about rain.",
    "What causes the seasons?", "Describe a good first date.", "List five uses of a paperclip.",
    "Why is the sea salty?", "Summarize the plot of Cinderella.", "How do vaccines work?",
    "Suggest a name for a coffee shop.", "What is a prime number?", "Describe the water cycle.",
    "Give advice for a job interview.", "What is inflation?", "Write a limerick about a cat.",
    "Explain how a bicycle stays upright.",
]


async def measure(max_batch: int, n: int, max_tokens: int) -> dict:
    backend = make_backend("local", max_batch=max_batch)
    requests = [
        Request([{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}], Sampling(temperature=1.0, top_p=0.9, max_tokens=max_tokens, seed=i))
        for i in range(n)
    ]
    try:
        await backend.generate(requests[:1])  # warm up
        started = time.perf_counter()
        results = await backend.generate(requests)
        seconds = time.perf_counter() - started
    finally:
        await backend.aclose()
    tokens = sum(r.completion_tokens for r in results)
    return {"max_batch": max_batch, "requests": n, "tokens": tokens, "seconds": round(seconds, 2),
            "tokens_per_s": round(tokens / seconds, 1), "peak_batch": backend.peak_batch}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrent", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    batched = asyncio.run(measure(args.concurrent, args.concurrent, args.max_tokens))
    unbatched = asyncio.run(measure(1, args.concurrent, args.max_tokens))
    print(json.dumps({"batched": batched, "unbatched": unbatched,
                      "speedup": round(batched["tokens_per_s"] / unbatched["tokens_per_s"], 2)}))


if __name__ == "__main__":
    main()
