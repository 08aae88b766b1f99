"""The `evolinstruct` command line."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from .backends.base import BACKENDS, BackendError
from .config import EvolveConfig, ModelSpec
from .seeds import SeedError
from .store import ConfigMismatch
from .templates import TemplateError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evol-Instruct (WizardLM), end to end.")
console = Console(stderr=True)

SEPARATORS = {"repo": "\r\n", "newline": "\n", "blank-line": "\n\n", "space": " "}


def _fail(message: str) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _spec(backend: str | None, model: str | None, base_url: str | None, key_env: str, fallback: ModelSpec | None = None) -> ModelSpec | None:
    if backend is None and model is None and base_url is None:
        return None
    if backend is None:
        backend = "openai" if base_url else (fallback.backend if fallback else "local")
    return ModelSpec(backend=backend, model=model, base_url=base_url or (fallback.base_url if fallback else None), api_key_env=key_env)


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


@app.command()
def evolve(
    seeds: Annotated[Path, typer.Argument(help="Seed file: Alpaca JSON, Self-Instruct JSONL, or any JSON/JSONL/CSV/Parquet.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="RUN_DIR: outputs and the resumable run store.")],
    epochs: Annotated[int, typer.Option(min=1, help="Evolution epochs (the paper: 4).")] = 4,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N seeds.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed: operation choices and sampling seeds derive from it.")] = 0,
    backend: Annotated[str | None, typer.Option(help="local (in-process transformers), openai (any compatible server), llamacpp or vllm (in-process, optional extras). Default: local unless --base-url is given.")] = None,
    model: Annotated[str | None, typer.Option(help="Model: the served model name for openai; a path, hub id or 'embedded' for local.")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most (shared by all roles).")] = 32,
    max_chains: Annotated[int | None, typer.Option(min=1, help="Seeds in progress at once (default: 4 x concurrency).")] = None,
    templates: Annotated[str, typer.Option(help="Evolution prompts: paper, repo, or a template JSON file.")] = "paper",
    ops: Annotated[str | None, typer.Option(help="Operation weights, e.g. 'add_constraints=2,mutation=1' (default: uniform).")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, help="Max new tokens per evolution and response (the paper: 2048).")] = 2048,
    temperature: Annotated[float, typer.Option(min=0.0, help="Sampling temperature (the paper: 1).")] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0, help="Nucleus sampling (the paper: 0.9).")] = 0.9,
    column: Annotated[str, typer.Option(help="Seed column holding the instruction.")] = "instruction",
    input_column: Annotated[str, typer.Option(help="Seed column holding the input ('' for none).")] = "input",
    input_separator: Annotated[str, typer.Option(help="How instruction and input are joined: repo (\\r\\n), newline, blank-line, space.")] = "repo",
    seed_responses: Annotated[str, typer.Option(help="generate: answer seeds with the model (the paper); keep: keep the seed file's outputs.")] = "generate",
    answer_model: Annotated[str | None, typer.Option(help="A separate model for responses (default: the evolving model).")] = None,
    answer_backend: Annotated[str | None, typer.Option(help="Backend of --answer-model.")] = None,
    answer_base_url: Annotated[str | None, typer.Option(help="Endpoint of --answer-model.")] = None,
    judge_model: Annotated[str | None, typer.Option(help="Model for the equality check (rule 1; default: the evolving model).")] = None,
    judge_backend: Annotated[str | None, typer.Option(help="Backend of --judge-model.")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Endpoint of --judge-model.")] = None,
    equality_check: Annotated[bool, typer.Option(help="Run elimination rule 1 (an LLM call per evolution).")] = True,
    rpm: Annotated[float | None, typer.Option(help="Requests-per-minute cap (openai backend).")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens-per-minute cap (openai backend; prompt estimate + max_tokens).")] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds before one HTTP request times out and is retried.")] = 600.0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries on 429, 5xx, timeouts and resets (exponential backoff, jitter).")] = 6,
    http_client: Annotated[str, typer.Option(help="aiohttp (default, fastest), sdk (openai SDK on httpx) or sdk-aiohttp.")] = "aiohttp",
    max_calls: Annotated[int | None, typer.Option(min=0, help="Stop cleanly after sending this many calls (resumable).")] = None,
    max_cost: Annotated[float | None, typer.Option(min=0.0, help="Stop cleanly once this many USD are spent (needs --prices).")] = None,
    prices: Annotated[Path | None, typer.Option(help='Price table JSON: {"MODEL or *": {"input": USD/1M tokens, "output": USD/1M tokens}}.')] = None,
) -> None:
    """Evolve seed instructions into harder ones, answer them, and eliminate failures."""
    from .runner import run_evolve

    if input_separator not in SEPARATORS:
        _fail(f"--input-separator must be one of {', '.join(SEPARATORS)}")
    if seed_responses not in ("generate", "keep"):
        _fail("--seed-responses must be generate or keep")
    backend_name = backend or ("openai" if base_url else "local")
    if backend_name not in BACKENDS:
        _fail(f"unknown backend '{backend_name}' (choose {', '.join(BACKENDS)})")
    evolver = ModelSpec(backend=backend_name, model=model, base_url=base_url, api_key_env=api_key_env)
    config = EvolveConfig(
        seeds=str(seeds), epochs=epochs, limit=limit, seed=seed, templates=templates, op_weights=ops,
        column=column, input_column=input_column or None, input_separator=SEPARATORS[input_separator],
        seed_responses=seed_responses, evolver=evolver,
        responder=_spec(answer_backend, answer_model, answer_base_url, api_key_env, evolver),
        judge=_spec(judge_backend, judge_model, judge_base_url, api_key_env, evolver),
        equality_check=equality_check, max_tokens=max_tokens, temperature=temperature, top_p=top_p,
        concurrency=concurrency, max_chains=max_chains, rpm=rpm, tpm=tpm, request_timeout=request_timeout, max_retries=max_retries,
        http_client=http_client, max_calls=max_calls, max_cost=max_cost, prices=str(prices) if prices else None,
    )
    if max_cost is not None and prices is None:
        _fail("--max-cost needs --prices FILE (a price table) to know what calls cost")

    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
        TextColumn("[green]kept {task.fields[kept]}[/] [yellow]elim {task.fields[elim]}[/] [red]err {task.fields[err]}[/]"),
        console=console, transient=False,
    )
    task_id = None

    def on_start(n_seeds: int, resumed: bool) -> None:
        nonlocal task_id
        label = "resuming" if resumed else "evolving"
        console.print(f"{label} {n_seeds} seeds x {epochs} epochs with {evolver.label} ({backend_name}) -> {out}")
        task_id = progress.add_task("evolve", total=n_seeds * (epochs + 1), kept=0, elim=0, err=0, rate="")
        progress.start()

    last_draw = 0.0
    last_seen = None

    def on_step(p) -> None:
        nonlocal last_draw, last_seen
        last_seen = p
        now = time.monotonic()
        if task_id is None or now - last_draw < 0.1:  # redraw at most 10 times a second
            return
        last_draw = now
        task = progress.tasks[0]
        rate = f"{task.speed:.2f} steps/s" if task.speed else ""
        progress.update(task_id, completed=p.steps_done, kept=p.kept, elim=p.eliminated, err=p.errors, rate=rate)

    try:
        stats = run_evolve(config, out, on_step=on_step, on_start=on_start)
    except (SeedError, TemplateError, ConfigMismatch, BackendError, ValueError) as exc:
        progress.stop()
        _fail(str(exc))
    except KeyboardInterrupt:
        progress.stop()
        console.print("[yellow]interrupted[/]: everything finished so far is stored; rerun the same command to resume.")
        raise typer.Exit(130) from None
    if last_seen is not None:
        last_draw = 0.0
        on_step(last_seen)  # the final counts, which the redraw throttle may have skipped
    progress.stop()
    _summary(stats, out)
    if stats["evolutions"]["errors"] or stats["seed_errors"]:
        raise typer.Exit(3)  # incomplete: scripts can tell; rerunning the command retries the failed calls


def _summary(stats: dict, out: Path) -> None:
    ev = stats["evolutions"]
    table = Table(title=f"evolinstruct run: {out}", show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("seeds", f"{stats['seeds']} ({stats['seeds_answered']} answered, {stats['skipped_empty_seeds']} empty skipped)")
    table.add_row("evolutions", f"{ev['attempted']}/{ev['planned']} attempted: [green]{ev['kept']} kept[/], "
                  f"[yellow]{ev['eliminated']} eliminated[/], [red]{ev['errors']} errors[/]")
    for reason, n in stats["eliminated"].items():
        table.add_row(f"  {reason}", str(n))
    for epoch, c in stats["by_epoch"].items():
        table.add_row(f"epoch {epoch}", f"{c.get('kept', 0)} kept / {c.get('attempted', 0)} attempted")
    table.add_row("ops (kept/attempted)", ", ".join(f"{op} {c.get('kept', 0)}/{c.get('attempted', 0)}" for op, c in stats["by_op"].items()))
    table.add_row("llm calls", f"{stats['llm_calls']} sent, {stats['cache_hits']} from cache, {stats['failed_calls']} failed")
    table.add_row("tokens", f"{stats['tokens']['prompt']} prompt + {stats['tokens']['completion']} completion")
    if "cost" in stats:
        table.add_row("cost", f"${stats['cost']['this_run']:.4f} this run, ${stats['cost']['total']:.4f} in total")
    table.add_row("time", f"{stats['seconds']:.1f}s (total {stats['seconds_total']:.1f}s)")
    table.add_row("dataset", f"{stats['dataset_rows']} rows -> {out / 'dataset.jsonl'}")
    Console().print(table)
    if stats.get("stopped_by"):
        console.print(f"[yellow]stopped by --{stats['stopped_by'].replace('_', '-')}[/]: rerun with a larger budget to continue.")
    if ev["errors"] or stats["seed_errors"]:
        console.print("[red]some calls failed[/]: see errors.jsonl; rerun the same command to retry them.")


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="alpaca, sharegpt or openai.")] = "alpaca",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output JSONL file.")] = Path("export.jsonl"),
) -> None:
    """Export the training mix in a fine-tuning format."""
    from .outputs import export

    try:
        n = export(run_dir, fmt, out)
    except (FileNotFoundError, ValueError) as exc:
        _fail(str(exc))
    console.print(f"wrote {n} rows ({fmt}) to {out}")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
