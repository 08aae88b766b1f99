"""The `evolinstruct` command line."""

from __future__ import annotations

import logging
import os
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
from .console import console, fail, stops_cleanly
from .seeds import SeedError
from .store import ConfigMismatch
from .templates import TemplateError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evol-Instruct (WizardLM), end to end.")

SEPARATORS = {"repo": "\r\n", "newline": "\n", "blank-line": "\n\n", "space": " "}


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
        fail(f"--input-separator must be one of {', '.join(SEPARATORS)}")
    if seed_responses not in ("generate", "keep"):
        fail("--seed-responses must be generate or keep")
    backend_name = backend or ("openai" if base_url else "local")
    if backend_name not in BACKENDS:
        fail(f"unknown backend '{backend_name}' (choose {', '.join(BACKENDS)})")
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
        fail("--max-cost needs --prices FILE (a price table) to know what calls cost")

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

    with stops_cleanly(progress, (SeedError, TemplateError, ConfigMismatch, BackendError, ValueError)):
        stats = run_evolve(config, out, on_step=on_step, on_start=on_start)
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
        fail(str(exc))
    console.print(f"wrote {n} rows ({fmt}) to {out}")


@app.command("train")
def train_cmd(
    data: Annotated[Path, typer.Argument(help="A RUN_DIR (its dataset.jsonl) or any file `evolinstruct export` writes.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="OUT_DIR: the model, adapter, checkpoints, mix and model card.")],
    base: Annotated[str, typer.Option(help="Base causal LM: 'embedded' (SmolLM2-135M-Instruct), a local path or a hub id.")] = "embedded",
    recipe: Annotated[str | None, typer.Option(help="Preset: small (default; CPU-sized) or wizardlm-7b (the paper's). Flags below override it.")] = None,
    subset: Annotated[str | None, typer.Option(help="Train on RUN_DIR/filtered/NAME (written by `evolinstruct filter`).")] = None,
    prompt_format: Annotated[str | None, typer.Option(help="paper ('{instruction}\\n\\n### Response:') or chat (the model's chat template).")] = None,
    epochs: Annotated[float | None, typer.Option(min=0.0, help="Training epochs.")] = None,
    lr: Annotated[float | None, typer.Option(min=0.0, help="Peak learning rate.")] = None,
    scheduler: Annotated[str | None, typer.Option(help="LR schedule (transformers name: cosine, linear, constant, ...).")] = None,
    warmup_steps: Annotated[int | None, typer.Option(min=0, help="Warmup steps.")] = None,
    max_steps: Annotated[int | None, typer.Option(min=1, help="Stop after this many optimizer steps (overrides epochs).")] = None,
    batch_size: Annotated[int | None, typer.Option(min=1, help="Global batch size (per-device x grad-accum x devices).")] = None,
    per_device_batch_size: Annotated[int | None, typer.Option(min=1, help="Examples per device per forward pass.")] = None,
    grad_accum: Annotated[int | None, typer.Option(min=1, help="Gradient accumulation steps (sets --batch-size = per-device x this x devices).")] = None,
    max_length: Annotated[int | None, typer.Option(min=8, help="Max tokens per example (longer ones are cut).")] = None,
    gradient_checkpointing: Annotated[bool | None, typer.Option("--gradient-checkpointing/--no-gradient-checkpointing", help="Trade compute for memory.")] = None,
    lora: Annotated[bool, typer.Option("--lora", help="Train a LoRA adapter instead of all weights.")] = False,
    qlora: Annotated[bool, typer.Option("--qlora", help="LoRA on a 4-bit base (needs bitsandbytes and a CUDA GPU).")] = False,
    lora_r: Annotated[int, typer.Option(min=1, help="LoRA rank.")] = 16,
    lora_alpha: Annotated[int, typer.Option(min=1, help="LoRA alpha.")] = 32,
    lora_dropout: Annotated[float, typer.Option(min=0.0, max=1.0, help="LoRA dropout.")] = 0.05,
    lora_target_modules: Annotated[str, typer.Option(help="'all-linear' or a comma list, e.g. q_proj,v_proj.")] = "all-linear",
    merge: Annotated[bool, typer.Option("--merge/--no-merge", help="Merge the LoRA adapter into the base in OUT_DIR (the adapter stays in OUT_DIR/adapter).")] = True,
    sample: Annotated[int | None, typer.Option(min=1, help="Sample N examples (weighted, without replacement, seeded).")] = None,
    epoch_weights: Annotated[str | None, typer.Option(help="Sampling weight per evolution epoch, e.g. '0=1,1=2' (0 drops).")] = None,
    op_weights: Annotated[str | None, typer.Option(help="Sampling weight per operation, e.g. 'seed=0.5,mutation=2' (0 drops).")] = None,
    min_score: Annotated[list[str] | None, typer.Option(help="Keep rows whose score NAME >= VALUE, e.g. difficulty=5 (repeatable).")] = None,
    eval_fraction: Annotated[float, typer.Option(min=0.0, max=0.9, help="Hold out this fraction (whole lineages) for eval loss.")] = 0.0,
    seed: Annotated[int, typer.Option(help="Seed for sampling, the split and training.")] = 0,
    save_steps: Annotated[int | None, typer.Option(min=1, help="Checkpoint every N steps (default: 5 per run).")] = None,
    logging_steps: Annotated[int | None, typer.Option(min=1, help="Log the loss every N steps (default: ~50 points per run).")] = None,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint in OUT_DIR, on the saved mix.")] = False,
    threads: Annotated[int | None, typer.Option(min=1, help="CPU threads for torch.")] = None,
) -> None:
    """Fine-tune a causal LM on the evolved data (TRL SFT; full or LoRA), loss on responses only."""
    from .train import (
        LoraOptions,
        MixSpec,
        TrainDataError,
        TrainError,
        TrainOptions,
        parse_weights,
        resolve_recipe,
        train,
    )

    try:
        if grad_accum is not None:
            from .train.recipes import RECIPES

            per_device = per_device_batch_size or RECIPES.get(recipe or "small", RECIPES["small"]).per_device_batch_size
            batch_size = per_device * grad_accum * int(os.environ.get("WORLD_SIZE", "1"))
        chosen = resolve_recipe(
            recipe, prompt_format=prompt_format, epochs=epochs, learning_rate=lr, scheduler=scheduler,
            warmup_steps=warmup_steps, batch_size=batch_size, per_device_batch_size=per_device_batch_size,
            max_length=max_length, gradient_checkpointing=gradient_checkpointing,
        )
        spec = MixSpec(
            sample=sample, seed=seed, eval_fraction=eval_fraction,
            epoch_weights=parse_weights(epoch_weights, "--epoch-weights", int),
            op_weights=parse_weights(op_weights, "--op-weights"),
            min_scores=parse_weights(",".join(min_score or []), "--min-score"),
        )
        lora_opts = None
        if lora or qlora:
            lora_opts = LoraOptions(r=lora_r, alpha=lora_alpha, dropout=lora_dropout, target_modules=lora_target_modules,
                                    quantize_4bit=qlora, merge=merge)
        result = train(TrainOptions(
            data=data, out_dir=out, base=base, recipe=chosen, subset=subset, mix=spec, lora=lora_opts,
            max_steps=max_steps, save_steps=save_steps, logging_steps=logging_steps, resume=resume, seed=seed, threads=threads,
        ))
    except (TrainDataError, TrainError, BackendError, ValueError, OSError) as exc:
        fail(str(exc))
    losses = result.train_loss
    if losses:
        console.print(f"loss {losses[0][1]:.4f} (step {losses[0][0]}) -> {losses[-1][1]:.4f} (step {losses[-1][0]})")
    if len(result.loss_by_epoch) > 1:
        console.print("mean loss per pass over the data: " + ", ".join(f"{loss:.3f}" for _, loss in result.loss_by_epoch))
    if result.eval_loss:
        console.print(f"eval loss {result.eval_loss[0][1]:.4f} -> {result.eval_loss[-1][1]:.4f}")
    resumed = f", resumed from step {result.start_step}" if result.resumed_from else ""
    console.print(f"trained {result.global_step} steps in {result.seconds:.0f}s{resumed} -> {out} (model card: {out / 'README.md'})")


@app.command()
def score(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    difficulty: Annotated[bool, typer.Option("--difficulty", help="The paper's 1-10 difficulty rating (one LLM call per record).")] = False,
    complexity: Annotated[bool, typer.Option("--complexity", help="DEITA complexity ranking of each seed with its evolutions (one call per lineage).")] = False,
    quality: Annotated[bool, typer.Option("--quality", help="DEITA quality ranking of each lineage's responses (one call per lineage).")] = False,
    heuristics: Annotated[bool, typer.Option("--heuristics", help="Length, constraints, steps, code, data, lexical diversity (no LLM).")] = False,
    backend: Annotated[str | None, typer.Option(help="Backend of the scoring model (default: the run's evolving model).")] = None,
    model: Annotated[str | None, typer.Option(help="Scoring model (default: the run's evolving model).")] = None,
    base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint of the scoring model.")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most.")] = 32,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Max new tokens per scoring call (default: 16 for difficulty, 8 per item for rankings).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N records.")] = None,
    include_eliminated: Annotated[bool, typer.Option("--include-eliminated", help="Score eliminated evolutions too.")] = False,
) -> None:
    """Score a run's records (default: --heuristics --difficulty); dataset.jsonl and stats.json get the scores."""
    from .quality.scoring import ScoreOptions, run_score, summary_table

    if backend is not None and backend not in BACKENDS:
        fail(f"unknown backend '{backend}' (choose {', '.join(BACKENDS)})")
    options = ScoreOptions(
        difficulty=difficulty, complexity=complexity, quality=quality, heuristics=heuristics, backend=backend,
        model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, max_tokens=max_tokens,
        limit=limit, include_eliminated=include_eliminated,
    )
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("ETA"), TimeRemainingColumn(), TextColumn("[red]unparsed {task.fields[unparsed]}[/]"),
        console=console, transient=False,
    )
    task_id = None

    def on_start(n_records: int, n_jobs: int, model_label: str) -> None:
        nonlocal task_id
        console.print(f"scoring {n_records} records ({', '.join(options.scorers())}) with {model_label} -> {run_dir}")
        if n_jobs:
            task_id = progress.add_task("score", total=n_jobs, unparsed=0)
            progress.start()

    def on_progress(p) -> None:
        if task_id is not None:
            progress.update(task_id, completed=p.done, unparsed=sum(p.parse_failures.values()))

    with stops_cleanly(progress, (FileNotFoundError, ConfigMismatch, BackendError, TemplateError, ValueError),
                       interrupted="every finished call is stored; rerun the same command to resume."):
        stats = run_score(run_dir, options, on_start=on_start, on_progress=on_progress)
    progress.stop()
    Console().print(summary_table(stats, run_dir))
    run = stats["score_run"]
    console.print(f"llm calls: {run['llm_calls']} sent, {run['cache_hits']} from cache; scores -> {run_dir / 'dataset.jsonl'}")
    if run["call_failures"]:
        console.print("[red]some calls failed[/]: rerun the same command to retry them.")
        raise typer.Exit(3)


@app.command("report")
def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="The HTML file to write (default: RUN_DIR/report.html).")] = None,
    eval_dirs: Annotated[list[Path] | None, typer.Option("--eval", help="An EVAL_DIR holding results.json (repeatable).")] = None,
    diversity_map: Annotated[bool, typer.Option("--map/--no-map", help="Embed the instructions for the diversity map (a few seconds).")] = True,
    map_limit: Annotated[int, typer.Option(min=3, help="Most instructions on the diversity map (a random sample beyond).")] = 2000,
    tree_limit: Annotated[int, typer.Option(min=1, help="Most seeds in the evolution-tree browser (keeps the page light).")] = 1000,
) -> None:
    """Write one self-contained HTML report of a run: difficulty, operations, eliminations, diversity, trees."""
    from .report import ReportError, build_report

    target = out or run_dir / "report.html"
    try:
        info = build_report(run_dir, target, eval_dirs or [], diversity_map=diversity_map,
                            map_limit=map_limit, tree_limit=tree_limit)
    except ReportError as exc:
        fail(str(exc))
    console.print(f"wrote {target} ({info['bytes'] / 1024:.0f} KB, {info['records']} records) in {info['seconds']:.1f}s")


def _min_scores(pairs: list[str] | None) -> dict[str, float]:
    scores = {}
    for pair in pairs or []:
        key, _, value = pair.partition("=")
        try:
            scores[key.strip()] = float(value)
        except ValueError:
            fail(f"--min-score expects KEY=VALUE (e.g. difficulty=5), not '{pair}'")
    return scores


@app.command("filter")
def filter_cmd(
    source: Annotated[Path, typer.Argument(help="A RUN_DIR (its dataset.jsonl) or any dataset/seed file (JSONL, JSON, CSV, Parquet).")],
    name: Annotated[str, typer.Option(help="Subset name: a RUN_DIR source writes RUN_DIR/filtered/NAME.")] = "default",
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Output directory (required for a file source).")] = None,
    scrub: Annotated[bool, typer.Option(help="Drop refusals and evolving-prompt leftovers.")] = True,
    decontam: Annotated[bool, typer.Option(help="Drop prompts that overlap an eval item (n-grams).")] = True,
    eval_set: Annotated[list[Path] | None, typer.Option(help="Eval file to decontaminate against (repeatable; default: every file in ../shared/data/eval).")] = None,
    decontam_n: Annotated[int, typer.Option(min=1, help="Word n-gram size for decontamination.")] = 5,
    decontam_ratio: Annotated[float, typer.Option(help="Contaminated when a prompt holds this share of an eval item's n-grams.")] = 0.7,
    decontam_long_n: Annotated[int, typer.Option(min=0, help="Also contaminated on any shared n-gram this long (GPT-3: 13; 0: off).")] = 13,
    exact: Annotated[bool, typer.Option(help="Drop exact duplicates (normalised text).")] = True,
    minhash: Annotated[bool, typer.Option(help="Drop near-duplicates by MinHash LSH.")] = True,
    minhash_threshold: Annotated[float, typer.Option(help="Jaccard similarity of word shingles at which rows are duplicates.")] = 0.7,
    shingle_size: Annotated[int, typer.Option(min=1, help="Words per MinHash shingle (1: bag of words).")] = 2,
    embed: Annotated[bool, typer.Option(help="Drop near-duplicates by all-MiniLM-L6-v2 embeddings.")] = True,
    embed_threshold: Annotated[float, typer.Option(help="Cosine similarity at which rows are duplicates.")] = 0.95,
    budget: Annotated[int | None, typer.Option(min=0, help="Select at most N rows (DEITA-like: by score, then diversity).")] = None,
    rank_by: Annotated[str, typer.Option(help="difficulty, complexity, quality, complexity*quality or length.")] = "complexity*quality",
    diversity_threshold: Annotated[float, typer.Option(help="Selection skips rows with cosine above this to a chosen one (1: off).")] = 0.9,
    min_score: Annotated[list[str] | None, typer.Option(help="Keep rows whose score KEY >= VALUE, e.g. difficulty=5 (repeatable).")] = None,
    column: Annotated[str, typer.Option(help="Column holding the instruction.")] = "instruction",
    input_column: Annotated[str, typer.Option(help="Column holding the input ('' for none).")] = "input",
    output_column: Annotated[str, typer.Option(help="Column holding the response ('' for none).")] = "output",
) -> None:
    """Write a cleaned copy of a dataset: dedup, decontaminate, scrub, select. The source is kept."""
    from .quality.embeddings import EmbeddingsUnavailable
    from .quality.filters import FilterConfig, filter_source, summary_table
    from .seeds import SeedColumns

    config = FilterConfig(
        scrub=scrub, min_scores=_min_scores(min_score), decontam=decontam, eval_sets=[str(p) for p in eval_set or []],
        decontam_n=decontam_n, decontam_ratio=decontam_ratio, decontam_long_n=decontam_long_n, exact=exact,
        minhash=minhash, minhash_threshold=minhash_threshold, shingle_size=shingle_size, embed=embed,
        embed_threshold=embed_threshold, budget=budget, rank_by=rank_by, diversity_threshold=diversity_threshold,
    )
    columns = SeedColumns(column, input_column or None, output_column or None)
    try:
        with console.status("filtering..."):
            result = filter_source(source, name=name, out=out, config=config, columns=columns)
    except (SeedError, ValueError, ImportError, EmbeddingsUnavailable) as exc:
        fail(str(exc))
    Console().print(summary_table(result.stats))


# `evolinstruct eval [OPTIONS]` runs an evaluation; `eval human-sheet` / `eval human-import` are its subcommands.
from .evaluate.cli import eval_app  # noqa: E402  (registered last: a thin hook, the command lives in evaluate/)

app.add_typer(eval_app, name="eval")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
