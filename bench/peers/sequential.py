#!/usr/bin/env python3
"""The WizardLM repo's loop (Evol_Instruct/main.py), as a peer: one call after another.

For each seed: instruction = instruction + "\\r\\n" + input (as the repo joins them); then per epoch a
randomly chosen evolving prompt (the repo's depth/breadth prompts, byte-exact, from evolinstruct's
`repo` template set) -> one evolve call -> one answer call for the evolved instruction. No eliminator,
no judge, no retries beyond the SDK's own. The next epoch evolves the previous evolution.

Prints JSON {requests, seconds, req_per_s, seeds_done}. It is slow by design (ideal: 1 / latency
requests per second), so `--seconds` stops it after a fixed time.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

from openai import OpenAI

DEFAULT_SEEDS = Path(__file__).resolve().parents[3] / "shared" / "data" / "seeds" / "alpaca_52k.json"


def load_prompts() -> list[str]:
    """The repo's five prompt builders: constraints, deepen, concretizing, reasoning (depth) and breadth."""
    from evolinstruct.evolve.templates import load_templates

    t = load_templates("repo")
    return [t.operations[op]["template"] for op in t.ops]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", default="sim")
    p.add_argument("--seeds-file", type=Path, default=DEFAULT_SEEDS)
    p.add_argument("--seeds", type=int, default=10, help="number of seeds (from the start of the file)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seconds", type=float, default=0, help="stop after this long (0: run all seeds)")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    seeds = json.loads(a.seeds_file.read_text("utf-8"))[: a.seeds]
    prompts = load_prompts()
    rng = random.Random(a.seed)
    client = OpenAI(base_url=a.base_url, api_key="x", max_retries=2, timeout=120)

    def call(content: str) -> str:
        r = client.chat.completions.create(
            model=a.model, messages=[{"role": "user", "content": content}],
            temperature=1, top_p=0.9, max_tokens=a.max_tokens,
        )
        return r.choices[0].message.content or ""

    requests = 0
    seeds_done = 0
    t0 = time.perf_counter()
    deadline = t0 + a.seconds if a.seconds > 0 else float("inf")
    try:
        for obj in seeds:
            instruction = obj["instruction"].strip() + "\r\n" + obj.get("input", "").strip()
            for _ in range(a.epochs):
                if time.perf_counter() >= deadline:
                    raise TimeoutError
                evolved = call(rng.choice(prompts).replace("{instruction}", instruction)).strip()
                requests += 1
                if time.perf_counter() >= deadline:
                    raise TimeoutError
                call(evolved)
                requests += 1
                instruction = evolved
            seeds_done += 1
    except TimeoutError:
        pass
    seconds = time.perf_counter() - t0
    print(json.dumps({"requests": requests, "seconds": round(seconds, 3),
                      "req_per_s": round(requests / seconds, 3) if seconds else 0.0, "seeds_done": seeds_done}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
