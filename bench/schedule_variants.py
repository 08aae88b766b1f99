#!/usr/bin/env python3
"""How far could a different schedule lift the ceiling? A discrete-event model of other orderings.

`python bench/schedule_variants.py` prints, for C=256 L=0.5 (500 seeds) and C=1024 L=1.0 (2048 seeds),
the req/s a zero-overhead client would reach, as a fraction of C / L, for:

- sequential: evolinstruct's chain (seed answer, then per epoch evolve -> equality judge -> answer,
  the answer skipped when the judge eliminates, p = 0.1), slots to the chain with most calls left;
- parallel judge+answer: the judge and the answer of an epoch run at once (the answer is then paid for
  even when the judge eliminates);
- seed answer apart: the seed's own answer is independent of its chain (same priority, or lowest);
- fifo: slots in arrival order instead of by calls left.

Lognormal latency, sigma 0.5, drawn per call; mean of 5 trials. bench/run.py's `scheduler_model()` is
the sequential variant.
"""

from __future__ import annotations

import heapq
import math
import random


def simulate(seeds: int, slots: int, latency: float, *, trials: int = 5, **options: object) -> float:
    """Mean req/s over `trials` runs of the model."""
    return sum(_trial(random.Random(t), seeds, slots, latency, **options) for t in range(trials)) / trials


def _trial(rng: random.Random, seeds: int, slots: int, latency: float, *, epochs: int = 4, p_keep: float = 0.9,
           sigma: float = 0.5, parallel_judge: bool = False, seed_answer: str = "first", priority: str = "calls") -> float:
    mu = math.log(latency) - sigma**2 / 2
    queue: list[tuple[int, int, int, str]] = []
    running: list[tuple[float, int, str]] = []
    chains: dict[int, dict] = {}
    order, now, free, calls = 0, 0.0, slots, 0

    def calls_left(c: int) -> int:
        s = chains[c]
        return (epochs - s["epoch"]) * 3 - s["phase"] + (0 if s["seed_done"] else 1)

    def push(c: int, kind: str, low: bool = False) -> None:
        nonlocal order
        rank = 10**6 if low else (-calls_left(c) if priority == "calls" else 0)
        heapq.heappush(queue, (rank, order, c, kind))
        order += 1

    def next_epoch(c: int) -> None:
        s = chains[c]
        s["epoch"], s["phase"] = s["epoch"] + 1, 0
        if s["epoch"] < epochs:
            push(c, "evolve")

    for c in range(seeds):
        chains[c] = {"epoch": 0, "phase": 0, "seed_done": False, "pending": 0}
        if seed_answer == "first":
            push(c, "seed")
        else:
            push(c, "seed", low=seed_answer == "lowest")
            push(c, "evolve")
    while queue or running:
        while free and queue:
            _, _, c, kind = heapq.heappop(queue)
            heapq.heappush(running, (now + rng.lognormvariate(mu, sigma), c, kind))
            free -= 1
        now, c, kind = heapq.heappop(running)
        free, calls = free + 1, calls + 1
        s = chains[c]
        if kind == "seed":
            s["seed_done"] = True
            if seed_answer == "first":
                push(c, "evolve")
        elif kind == "evolve":
            s["phase"] = 1
            keep = rng.random() < p_keep
            if parallel_judge:
                s["pending"] = 2 if keep else 1
                push(c, "judge")
                if keep:
                    push(c, "answer")
            else:
                s["keep"] = keep
                push(c, "judge")
        elif kind == "judge" and not parallel_judge:
            if s["keep"]:
                s["phase"] = 2
                push(c, "answer")
            else:
                next_epoch(c)
        elif parallel_judge:
            s["pending"] -= 1
            if s["pending"] == 0:
                next_epoch(c)
        else:  # a sequential chain's answer ends its epoch
            next_epoch(c)
    return calls / now


VARIANTS = {
    "sequential (evolinstruct)": {},
    "parallel judge+answer": {"parallel_judge": True},
    "seed answer apart": {"seed_answer": "apart"},
    "seed answer apart, lowest priority": {"seed_answer": "lowest"},
    "seed apart + parallel judge": {"seed_answer": "apart", "parallel_judge": True},
    "fifo slots": {"priority": "fifo"},
}


def main() -> None:
    print("| schedule | C=256 L=0.5, 500 seeds | C=1024 L=1.0, 2048 seeds |")
    print("| --- | ---: | ---: |")
    for name, options in VARIANTS.items():
        a = simulate(500, 256, 0.5, **options) * 0.5 / 256
        b = simulate(2048, 1024, 1.0, **options) * 1.0 / 1024
        print(f"| {name} | {a:.1%} | {b:.1%} |")


if __name__ == "__main__":
    main()
