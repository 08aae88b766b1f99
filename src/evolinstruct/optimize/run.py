"""Wire an optimization together: read and split the seeds, run the loop (loop.py) on the run store, then
the holdout comparison (holdout.py), and write stats.json."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from ..rundir import make_output_dir, write_stats
from .holdout import compare_holdout
from .loop import Event, OptimizeConfig, optimize_async, read_all_seeds, split_seeds


def run_optimize(config: OptimizeConfig, out: str | Path, on_event: Event | None = None) -> dict[str, Any]:
    """Run (or resume) an optimization into `out`; then, unless stopped early or --holdout 0, the holdout
    comparison (holdout.py). Returns stats.json's content."""
    events = on_event or (lambda _e: None)
    split = split_seeds(read_all_seeds(config), config)  # bad seeds or sizes fail before anything is written
    out = make_output_dir(out)
    stats = asyncio.run(optimize_async(config, out, split, events))
    if config.holdout and not stats["stopped_by"]:
        remaining = None if config.max_calls is None else max(0, config.max_calls - stats["llm_calls"])
        cost_left = None if config.max_cost is None else max(0.0, config.max_cost - stats["cost_usd"])
        stats["holdout"] = compare_holdout(config, out, split.holdout, remaining, events, max_cost=cost_left,
                                           final_is_initial=not stats["final_method_changed"])
        if stopped := stats["holdout"].get("stopped_by"):  # incomplete: the rerun finishes the comparison
            stats["stopped_by"] = stopped
    write_stats(out, stats)
    return stats
