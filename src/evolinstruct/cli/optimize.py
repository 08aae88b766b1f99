"""`evolinstruct optimize`: Auto Evol-Instruct learns the evolving method from your seeds (docs/AUTO_EVOL.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from ..models import BackendError, Transport, endpoint, resolve_role
from ..seeds import SeedError
from ..store import ConfigMismatch, StoreError
from . import display
from .console import console, fail, stops_cleanly


def optimize(
    seeds: Annotated[Path, typer.Argument(help="Seed file (any format evolve reads): split into train, dev and holdout slices.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="OPT_DIR: method.json, history.jsonl, stats.json and the resumable run store.")],
    steps: Annotated[int, typer.Option(min=1, help="Optimization steps (the official default: 10).")] = 10,
    candidates: Annotated[int, typer.Option(min=1, help="Candidate methods per step (the paper's m).")] = 5,
    batch_size: Annotated[int, typer.Option(min=1, help="Training minibatch of each step's evolution trajectory.")] = 10,
    dev_size: Annotated[int, typer.Option(min=1, help="Dev instructions that score every method (the paper: 10-50).")] = 10,
    rounds: Annotated[int, typer.Option(min=1, help="Trajectory length l: evolution rounds per training instruction.")] = 1,
    holdout: Annotated[int, typer.Option(min=0, help="Held-out seeds evolved at the end with the initial and the final method, for the comparison (0: none).")] = 10,
    holdout_epochs: Annotated[int, typer.Option(min=1, help="Epochs of the holdout evolve runs.")] = 1,
    difficulty: Annotated[bool, typer.Option("--difficulty", help="Also compare the holdout's mean difficulty (the paper's difficulty prompt by the evolving model, one call per record).")] = False,
    seed: Annotated[int, typer.Option(help="Run seed: the split, the minibatches and every sampling seed derive from it.")] = 0,
    failure: Annotated[str, typer.Option(help="What makes a dev evolution fail: paper (Auto Evol-Instruct's detector on the answer), rules (evolve's elimination rules with the equality judge) or both. Both success rates are reported either way.")] = "both",
    evol_model: Annotated[str | None, typer.Option(help="The model that evolves and answers (default: the embedded model).")] = None,
    evol_backend: Annotated[str | None, typer.Option(help="Backend of --evol-model: local, openai, llamacpp, vllm (default: local unless --evol-base-url).")] = None,
    evol_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint of --evol-model.")] = None,
    optimizer_model: Annotated[str | None, typer.Option(help="The model that analyses trajectories and rewrites the method (default: the evolving model).")] = None,
    optimizer_backend: Annotated[str | None, typer.Option(help="Backend of --optimizer-model.")] = None,
    optimizer_base_url: Annotated[str | None, typer.Option(help="Endpoint of --optimizer-model.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key.")] = "OPENAI_API_KEY",
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per call (the official optimizer: 1500).")] = 1500,
    temperature: Annotated[float, typer.Option(min=0.0, help="Temperature of evolving and answering (the official optimizer: 0).")] = 0.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling of every call (the official optimizer: 0.9).")] = 0.9,
    optimizer_temperature: Annotated[float, typer.Option(min=0.0, help="Temperature of the optimizer's calls: the candidates of a step differ by their sampling seed only, so keep it above 0.")] = 0.7,
    column: Annotated[str, typer.Option(help="Seed column holding the instruction.")] = "instruction",
    input_column: Annotated[str, typer.Option(help="Seed column holding the input ('' for none).")] = "input",
    input_separator: Annotated[str, typer.Option(help="How instruction and input are joined: repo (\\r\\n), newline, blank-line, space.")] = "repo",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most (shared by both roles).")] = 32,
    request_timeout: Annotated[float, typer.Option(help="Seconds before one HTTP request times out and is retried.")] = 600.0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries on 429, 5xx, timeouts and resets.")] = 6,
    max_calls: Annotated[int | None, typer.Option(min=0, help="Stop cleanly after sending this many calls (resumable).")] = None,
    max_cost: Annotated[float | None, typer.Option(min=0.0, help="Stop cleanly once this many USD are spent (needs --prices).")] = None,
    prices: Annotated[Path | None, typer.Option(help='Price table JSON: {"MODEL or *": {"input": USD/1M tokens, "output": USD/1M tokens}}.')] = None,
) -> None:
    """Learn an evolving method from your seeds (Auto Evol-Instruct); use it with `evolve --templates OPT_DIR/method.json`."""
    from ..evolve.config import SEPARATORS
    from ..evolve.templates import TemplateError
    from ..optimize import OptimizeConfig, OptimizeError, run_optimize

    if input_separator not in SEPARATORS:
        fail(f"--input-separator must be one of {', '.join(SEPARATORS)}")
    try:
        evol = resolve_role(evol_backend, evol_model, evol_base_url, api_key_env, option="--evol-model")
        assert evol is not None
        opt = resolve_role(optimizer_backend, optimizer_model, optimizer_base_url, api_key_env, evol,
                           option="--optimizer-model")
        assert opt is not None
        config = OptimizeConfig(
            seeds=str(seeds), steps=steps, candidates=candidates, batch_size=batch_size, dev_size=dev_size,
            rounds=rounds, holdout=holdout, holdout_epochs=holdout_epochs, difficulty=difficulty, seed=seed, failure=failure,
            max_tokens=max_tokens, temperature=temperature, top_p=top_p, optimizer_temperature=optimizer_temperature,
            column=column, input_column=input_column or None, input_separator=SEPARATORS[input_separator],
            evol=evol, optimizer=opt,
            transport=Transport(concurrency=concurrency, request_timeout=request_timeout, max_retries=max_retries),
            max_calls=max_calls, max_cost=max_cost, prices=str(prices) if prices else None,
        )
    except (BackendError, ValueError) as exc:
        fail(str(exc))

    def on_event(event: dict[str, Any]) -> None:
        kind = event["event"]
        if kind == "start":
            label = "resuming" if event["resumed"] else "optimizing"
            console.print(f"{label}: {steps} steps x {candidates} candidates; train {event['train']}, dev "
                          f"{event['dev']}, holdout {event['holdout']} seeds; evolving with {evol.label} "
                          f"({endpoint(evol)}), optimizer {opt.label} ({endpoint(opt)}) -> {out}", highlight=False)
        elif kind == "candidate":
            dev = event["dev"]
            what = "a new method" if event["optimized"] else "no Optimized Method block: the current method"
            console.print(f"  step {event['step']} candidate {event['index']}: {what}, success {dev['success']:.2f}, "
                          f"score {dev['score']:.3f}", highlight=False, style="dim")
        elif kind in ("step_done", "holdout"):
            console.print(display.optimize_event(event), highlight=False)

    progress = display.evolve_progress()  # never started: optimize prints a line per step
    with stops_cleanly(progress, (SeedError, TemplateError, ConfigMismatch, StoreError, BackendError, OptimizeError,
                                  ValueError)):
        stats = run_optimize(config, out, on_event)
    display.print_optimize_summary(stats, out)
    if stats.get("stopped_by"):
        raise typer.Exit(3)  # incomplete: rerunning the command resumes
