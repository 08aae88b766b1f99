"""Adaptive operation weights (`--op-weights adaptive`): a pilot, then weights fixed from its outcomes.

Some operations fail far more than others on a given model and data (a small model's add_constraints and
concretizing are mostly eliminated). Adaptive weights move the draws toward the operations that survive,
with a floor so that none disappears.

The design, and why it is deterministic:
- The pilot is the first N seeds (`--pilot`) in seed order (of this shard, with `--shards`). Their chains
  run with the configured weights (`--ops`, or the task's), exactly as a fixed-weight run would.
- The weights for every other seed are computed once, from the pilot's outcomes only: per operation, the
  posterior mean of its survival under a uniform Beta(1, 1) prior, (kept + 1) / (kept + eliminated + 2),
  times its configured weight, normalised to shares; then every operation with a configured weight gets at
  least `--op-floor` of the draws (the others scaled down to make room).
- A non-pilot chain waits until every pilot chain has ended (a barrier in `gate`). The pilot's outcomes are
  a function of (--seed, the seeds, the answers) alone, as every outcome is, so the weights are too: the
  order in which pilot chains finish, the concurrency and the number of restarts cannot change them.
- A resumed run replays its pilot from the store (every chain reruns, its calls replayed) and gets the
  same weights before any other chain moves. A pilot with a failed call is not complete: the other chains
  do not start in that run (stats `stopped_by: "pilot_incomplete"`); the rerun retries the failed call.
- Within a seed, operations are still drawn by `choose_operation` from (--seed, record id, epoch), now
  with the seed's weights.

Costs: the barrier idles the request slots while the last pilot chains finish (a pilot of N seeds is about
N x (epochs + 1) x 3 calls; the default N = 100 is a few percent of a 52K-seed run).
"""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from ..records import Record, Seed

MODES = ("fixed", "adaptive")
DEFAULT_PILOT = 100
DEFAULT_FLOOR = 0.05
PILOT_INCOMPLETE = "pilot_incomplete"


def shares(weights: dict[str, float]) -> dict[str, float]:
    total = sum(weights.values())
    return {op: w / total for op, w in weights.items()}


def survival(kept: int, eliminated: int) -> float:
    """The posterior mean of an operation's survival under a uniform prior (Laplace's rule)."""
    return (kept + 1) / (kept + eliminated + 2)


def with_floor(weights: dict[str, float], floor: float) -> dict[str, float]:
    """Shares summing to 1 in which every operation with a weight above 0 has at least `floor`; the others
    keep their proportions among themselves. Operations weighted 0 stay at 0."""
    live = {op: w for op, w in weights.items() if w > 0}
    if floor * len(live) > 1:
        raise ValueError(f"--op-floor {floor:g} is too high for {len(live)} operations (at most {1 / len(live):.4g})")
    floored: set[str] = set()
    while True:  # each pass floors at least one more operation, or ends
        free = 1 - floor * len(floored)
        rest = {op: w for op, w in live.items() if op not in floored}
        total = sum(rest.values())
        out = {op: floor if op in floored else free * w / total for op, w in live.items()}
        low = {op for op in rest if out[op] < floor}
        if not low:
            break
        floored |= low
    return {op: round(out.get(op, 0.0), 6) for op in weights}


def adaptive_weights(base: dict[str, float], outcomes: dict[str, Counter], floor: float) -> dict[str, float]:
    """The weights after the pilot: configured share x posterior survival, normalised, with the floor."""
    base_shares = shares(base)
    raw = {op: base_shares[op] * survival(outcomes[op]["kept"], outcomes[op]["eliminated"]) if base_shares[op] > 0
           else 0.0 for op in base}
    return with_floor(raw, floor)


def _rates(outcomes: dict[str, Counter], ops: Iterable[str]) -> dict[str, dict[str, Any]]:
    out = {}
    for op in ops:
        c = outcomes.get(op, Counter())
        decided = c["kept"] + c["eliminated"]
        out[op] = {"attempted": c["attempted"], "kept": c["kept"], "eliminated": c["eliminated"],
                   "survival": round(c["kept"] / decided, 4) if decided else None}
    return out


class AdaptiveWeights:
    """One per run: the pilot's membership, its barrier, its outcomes, and the weights of every seed."""

    def __init__(self, base: dict[str, float], pilot: Iterable[int], floor: float = DEFAULT_FLOOR) -> None:
        self.base, self.floor = base, floor
        with_floor(shares(base), floor)  # a floor too high for the operations is refused before the run
        self.pilot = frozenset(pilot)
        self._left = len(self.pilot)
        self._done = asyncio.Event()
        self.complete = True  # every pilot chain ended with no failed call (known once _done is set)
        self.weights: dict[str, float] | None = None  # after the pilot
        self.skipped = 0  # non-pilot seeds not run because the pilot was incomplete
        self.outcomes: dict[str, dict[str, Counter]] = {"pilot": defaultdict(Counter), "after": defaultdict(Counter)}
        self._roots: dict[str, int] = {}  # root id -> seed index, from the commits
        if not self.pilot:
            self._finish()

    # ---------------------------------------------------------------- the chain's side
    def for_seed(self, seed_index: int) -> dict[str, float]:
        """The weights a seed's chain draws its operations with."""
        if seed_index in self.pilot or self.weights is None:
            return self.base
        return self.weights

    def observe(self, records: list[Record], seed_index: int) -> None:
        """Every committed step (the commit hook): the pilot's outcomes, and the later ones for the report."""
        phase = "pilot" if seed_index in self.pilot else "after"
        for record in records:
            if phase == "pilot" and record.status == "error":
                self.complete = False  # the seed's answer or an evolution failed: retried on the next run
            if record.epoch == 0:
                continue
            counter = self.outcomes[phase][record.op]
            counter["attempted"] += 1
            counter[record.status] += 1

    def commit(self, save: Callable[..., None]) -> Callable[..., None]:
        """`save` (the store's save_step) that also observes what it stores."""

        def commit(records: list[Record], seed_index: int, *rest: Any) -> None:
            save(records, seed_index, *rest)
            self.observe(records, seed_index)

        return commit

    def gate(self, run_chain: Callable[[Seed], Awaitable[None]]) -> Callable[[Seed], Awaitable[None]]:
        """`run_chain` behind the pilot's barrier: pilot seeds run at once, the others after the pilot."""

        async def run(seed: Seed) -> None:
            if seed.index in self.pilot:
                try:
                    await run_chain(seed)
                except BaseException:
                    self.complete = False  # a budget stop or a cancellation: the pilot did not finish
                    raise
                finally:
                    self._left -= 1
                    if self._left == 0:
                        self._finish()
                return
            await self._done.wait()
            if not self.complete:
                self.skipped += 1
                return
            await run_chain(seed)

        return run

    def _finish(self) -> None:
        if self.complete:
            self.weights = adaptive_weights(self.base, self.outcomes["pilot"], self.floor)
        self._done.set()

    # ---------------------------------------------------------------- stats.json
    def stats(self) -> dict[str, Any]:
        ops = [op for op in self.base]
        return {
            "mode": "adaptive",
            "pilot_seeds": len(self.pilot),
            "pilot_complete": self.complete and self._done.is_set(),
            "floor": self.floor,
            "configured": {op: round(w, 6) for op, w in shares(self.base).items()},
            "adaptive": self.weights,
            "survival_pilot": _rates(self.outcomes["pilot"], ops),
            "survival_after": _rates(self.outcomes["after"], ops),
        }


def pilot_seeds(seeds: Iterable[Seed], size: int) -> list[int]:
    """The first `size` seeds' indices, in seed order (the seeds this process runs)."""
    out = []
    for seed in seeds:
        if len(out) >= size:
            break
        out.append(seed.index)
    return out
