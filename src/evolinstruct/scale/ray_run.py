"""`evolve --ray N`: the N shards of a run as Ray tasks, then merged (evolve/merge.py) into RUN_DIR.

Each task is an ordinary `evolve --shard I/N` (run_evolve: the asyncio executor, its own store in
RUN_DIR/shards/I), so a shard behaves exactly as one on its own machine. RUN_DIR must be a path every Ray
node sees (a shared file system) and so must the seed file. A task whose worker dies (a killed process, a
lost node) is retried by Ray (`max_retries`) and resumes from its shard's store: no stored call is sent
again. When every shard is done, the shards are merged into RUN_DIR.

Budgets: --max-calls and --max-cost are split across the shards (shard I gets max_calls // N, the first
max_calls % N shards one more; max_cost / N each), so the whole run never goes past them; a shard that
reaches its share stops while others may still have some left.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..evolve.config import EvolveConfig
from ..evolve.merge import merge_runs
from ..evolve.run import run_evolve
from ..rundir import write_stats

SHARDS_DIR = "shards"
MAX_RETRIES = 3  # Ray retries a shard whose worker died this many times


def shard_dirs(run_dir: Path, shards: int) -> list[Path]:
    return [run_dir / SHARDS_DIR / str(i) for i in range(shards)]


def shard_config(config: EvolveConfig, index: int, shards: int) -> EvolveConfig:
    """The config of shard `index`: its slice of the seeds and its share of the budgets."""
    shard = copy.deepcopy(config)
    shard.executor.shard, shard.executor.shards = index, shards
    shard.source.seeds = str(Path(config.source.seeds).resolve())  # workers may run elsewhere
    b = shard.budget
    if b.max_calls is not None:
        b.max_calls = b.max_calls // shards + (1 if index < b.max_calls % shards else 0)
    if b.max_cost is not None:
        b.max_cost = b.max_cost / shards
    if b.prices is not None:
        b.prices = str(Path(b.prices).resolve())
    return shard


def run_shard(config: EvolveConfig, run_dir: str, command: str | None) -> dict[str, Any]:
    """One shard, in a Ray worker: a normal (resumable) evolve run into its own RUN_DIR."""
    return run_evolve(config, run_dir, command=command)


def evolve_on_ray(config: EvolveConfig, run_dir: Path, shards: int, address: str | None = None,
                  command: str | None = None, on_shard: Callable[[int, dict[str, Any]], None] | None = None,
                  max_retries: int = MAX_RETRIES, cpus_per_shard: float = 1.0,
                  on_tick: Callable[[list[Path]], None] | None = None, tick: float = 1.0) -> dict[str, Any]:
    """Run every shard as a Ray task, then merge them into `run_dir`; returns the merged stats. `on_tick(dirs)`
    is called about every `tick` seconds while shards run (the CLI's progress line reads their stores)."""
    import ray

    if shards < 2:
        raise ValueError("--ray needs 2 or more shards (one shard is a plain evolve run)")
    run_dir = Path(run_dir).resolve()
    started = False
    clock = time.perf_counter()
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = True
    phases = {"ray_start": time.perf_counter() - clock}
    try:
        task = ray.remote(max_retries=max_retries, num_cpus=cpus_per_shard)(run_shard)
        dirs = shard_dirs(run_dir, shards)
        pending = {task.remote(shard_config(config, i, shards), str(d), command): i for i, d in enumerate(dirs)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1, timeout=tick if on_tick else None)
                if on_tick is not None:
                    on_tick(dirs)
                if not done:
                    continue
                index = pending.pop(done[0])
                try:
                    stats = ray.get(done[0])
                except ray.exceptions.RayTaskError as exc:  # a shard's own error (a bad key, a full disk): its one line
                    cause = getattr(exc, "cause", None)
                    if isinstance(cause, Exception):
                        raise cause from None
                    raise
                if on_shard is not None:
                    on_shard(index, stats)
        except BaseException:
            # A shard failed (or Ctrl-C): stop the others. On a cluster this process did not start they would
            # go on writing their stores, and a rerun would run the same shard twice at once (calls sent twice).
            for ref in pending:
                ray.cancel(ref, force=True)
            raise
        if on_tick is not None:
            on_tick(dirs)  # the last state: every shard done
        phases["shards"] = time.perf_counter() - clock - phases["ray_start"]
        merged = merge_runs(dirs, run_dir)
        phases["merge"] = time.perf_counter() - clock - phases["ray_start"] - phases["shards"]
        # Where the wall time went (stats.json "ray_seconds"): starting or joining Ray, the shards, the merge.
        merged["ray_seconds"] = {k: round(v, 3) for k, v in phases.items()}
        write_stats(run_dir, merged)
        return merged
    finally:
        if started:
            ray.shutdown()
