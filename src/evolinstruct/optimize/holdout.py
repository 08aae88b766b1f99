"""The built-in comparison: the held-out seeds evolved with the initial and with the final method.

Each side is an ordinary evolve run (evolve/run.py) in OPT_DIR/holdout/initial and OPT_DIR/holdout/final,
with the method's template set (one operation, `auto_evol`), every elimination rule on, and the optimizer's
evolving model and sampling; so each side is resumable and has its own report. Compared: the elimination
rate by reason, the mean length of the kept evolved instructions, their mean difficulty (with `difficulty`: the
paper's difficulty prompt, scored as `evolinstruct score --difficulty` does) and the calls per kept evolution.
"""

from __future__ import annotations

from pathlib import Path
from statistics import fmean
from typing import Any

from ..evolve.config import (
    Algorithm,
    BudgetConfig,
    EvolveConfig,
    ExecutorConfig,
    Roles,
    SamplingConfig,
    Source,
)
from ..evolve.run import run_evolve
from ..quality.score import ScoreOptions, run_score
from ..records import Seed
from ..rundir import DATASET, make_output_dir, read_jsonl, write_atomic_lines
from .loop import INITIAL_METHOD_FILE, METHOD_FILE, OptimizeConfig

HOLDOUT_DIR = "holdout"
SIDES = ("initial", "final")


def _side(run_dir: Path, stats: dict[str, Any]) -> dict[str, Any]:
    ev = stats["evolutions"]
    attempted = ev["attempted"] or 0
    evolved = [r for r in read_jsonl(run_dir / DATASET) if r.get("epoch", 0) > 0]
    lengths = [len(r["instruction"]) for r in evolved]
    difficulty = [v for r in evolved if (v := (r.get("scores") or {}).get("difficulty")) is not None]
    return {
        "evolutions": attempted,
        "kept": ev["kept"],
        "elimination_rate": round(ev["eliminated"] / attempted, 4) if attempted else None,
        "elimination_by_reason": {k: round(v / attempted, 4) for k, v in sorted(stats["eliminated"].items())} if attempted else {},
        "mean_instruction_chars": round(fmean(lengths), 1) if lengths else None,
        "mean_difficulty": round(fmean(difficulty), 2) if difficulty else None,
        "calls": stats["stored_calls"],
        "calls_per_kept": round(stats["stored_calls"] / ev["kept"], 2) if ev["kept"] else None,
        "errors": ev["errors"],
    }


def compare_holdout(config: OptimizeConfig, out: Path, seeds: list[Seed], max_calls: int | None,
                    on_event: Any = None, max_cost: float | None = None, final_is_initial: bool = False) -> dict[str, Any]:
    """Evolve `seeds` with both methods; returns {"seeds", "epochs", "initial": {...}, "final": {...}}.
    `max_calls` and `max_cost` are what the loop left of --max-calls and --max-cost, for both sides together.
    When the final method is the initial one, its side would be the same run (the same prompts, seeds and
    sampling seeds): it is not sent again, and "final" is the initial side's numbers."""
    root = make_output_dir(out / HOLDOUT_DIR)
    seeds_file = root / "seeds.jsonl"
    write_atomic_lines(seeds_file, ({"instruction": s.instruction, "input": s.input, "output": s.output} for s in seeds))
    result: dict[str, Any] = {"seeds": len(seeds), "epochs": config.holdout_epochs, "final_is_initial": final_is_initial}
    for side, method_file in zip(SIDES, (INITIAL_METHOD_FILE, METHOD_FILE), strict=True):
        if side == "final" and final_is_initial:
            result["final"] = result["initial"]
            break
        if on_event:
            on_event({"event": "holdout", "side": side})
        evolve = EvolveConfig(
            source=Source(seeds=str(seeds_file), input_separator=config.input_separator),
            algorithm=Algorithm(epochs=config.holdout_epochs, seed=config.seed, templates=str(out / method_file)),
            sampling=SamplingConfig(max_tokens=config.max_tokens, temperature=config.temperature, top_p=config.top_p,
                                    judge_max_tokens=config.judge_max_tokens),
            roles=Roles(evolver=config.evol),
            transport=config.transport,
            executor=ExecutorConfig(),
            budget=BudgetConfig(max_calls=max_calls, max_cost=max_cost, prices=config.prices),
        )
        run_dir = root / side
        stats = run_evolve(evolve, run_dir)
        if config.difficulty and not stats.get("stopped_by"):
            # the paper's difficulty prompt, by the evolving model, on the side's records (`evolinstruct score`)
            run_score(run_dir, ScoreOptions(difficulty=True, concurrency=config.transport.concurrency))
        result[side] = _side(run_dir, stats)
        if stats.get("stopped_by"):
            result["stopped_by"] = stats["stopped_by"]
            break
        if max_calls is not None:
            max_calls = max(0, max_calls - stats["llm_calls"])
        if max_cost is not None:
            max_cost = max(0.0, max_cost - stats["cost"]["this_run"])
    return result
