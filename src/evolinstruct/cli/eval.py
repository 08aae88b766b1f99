"""`evolinstruct eval`: a command (run an evaluation) that is also a group (human-sheet, human-import).

Typer shape: a sub-app whose callback runs with `invoke_without_command=True`. `evolinstruct eval
--testset wizardlm -o DIR` runs the evaluation; `evolinstruct eval human-sheet ...` runs a subcommand
(the callback then returns at once, so its options are not needed there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from ..models import BackendError, ModelSpec, resolve_role
from ..rundir import OutputError, write_json, write_text
from ..store import ConfigMismatch, StoreError
from . import display
from .console import console, fail, stops_cleanly

eval_app = typer.Typer(
    add_completion=False,
    invoke_without_command=True,
    help="Evaluate a model against a reference with an LLM judge (the paper's GPT-4 evaluation), per skill.",
)


def _spec(role: str, backend: str | None, model: str | None, base_url: str | None, key_env: str) -> ModelSpec:
    """A role of the evaluation; with nothing given, the embedded model (the one resolver evolve and score use)."""
    try:
        spec = resolve_role(backend, model, base_url, key_env, option=f"--{role}")
    except BackendError as exc:
        fail(str(exc))
    assert spec is not None
    return spec


@eval_app.callback()
def eval_main(
    ctx: typer.Context,
    out: Annotated[Path | None, typer.Option("-o", "--out", help="EVAL_DIR: results, answers, verdicts and the resumable store.")] = None,
    testset: Annotated[str, typer.Option(help="wizardlm (218 questions, 29 skills), vicuna (80), mtbench (80, two turns) or a JSON/JSONL FILE.")] = "wizardlm",
    limit: Annotated[int | None, typer.Option(min=1, help="Use N questions, taken round-robin over skills.")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="Shared data directory with eval/ and prompts/ (default: $EVOLINSTRUCT_DATA or ../shared/data).")] = None,
    model: Annotated[str | None, typer.Option(help="Model under test: 'embedded', a model directory from `evolinstruct train`, a hub id, or a served model name.")] = None,
    model_backend: Annotated[str | None, typer.Option(help="local, openai, llamacpp or vllm (default: local, or openai with --model-base-url).")] = None,
    model_base_url: Annotated[str | None, typer.Option(help="OpenAI-compatible endpoint of the model under test.")] = None,
    model_api_key_env: Annotated[str, typer.Option(help="Environment variable with the model endpoint's API key.")] = "OPENAI_API_KEY",
    reference: Annotated[str | None, typer.Option(help="Reference model (the paper: ChatGPT). Default: the embedded model with another seed.")] = None,
    reference_backend: Annotated[str | None, typer.Option(help="Backend of the reference.")] = None,
    reference_base_url: Annotated[str | None, typer.Option(help="Endpoint of the reference.")] = None,
    reference_api_key_env: Annotated[str, typer.Option(help="Environment variable with the reference endpoint's API key.")] = "OPENAI_API_KEY",
    judge: Annotated[str | None, typer.Option(help="Judge model (the paper: GPT-4). Default: the embedded model.")] = None,
    judge_backend: Annotated[str | None, typer.Option(help="Backend of the judge.")] = None,
    judge_base_url: Annotated[str | None, typer.Option(help="Endpoint of the judge.")] = None,
    judge_api_key_env: Annotated[str, typer.Option(help="Environment variable with the judge endpoint's API key.")] = "OPENAI_API_KEY",
    position: Annotated[str, typer.Option(help="swap: judge both orders and average; alternate: the paper's order, the model first on odd ids.")] = "swap",
    judge_guide: Annotated[str, typer.Option(help="Guided verdicts: the judge must open with its scores (enforced while decoding). auto: on for an in-process (local) judge, off for a served one.")] = "auto",
    temperature: Annotated[float | None, typer.Option(min=0.0, help="Answer temperature (default: the paper's 1; MT-Bench: FastChat's per category).")] = None,
    top_p: Annotated[float | None, typer.Option(min=0.0, max=1.0, help="Answer top-p (default 0.9; MT-Bench 1).")] = None,
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Max new tokens per answer (default 2048; MT-Bench 1024).")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the model's sampling and the bootstrap.")] = 0,
    reference_temperature: Annotated[float | None, typer.Option(min=0.0, help="Reference temperature (default: as the model).")] = None,
    reference_seed: Annotated[int | None, typer.Option(help="Reference sampling seed (default: seed + 1).")] = None,
    judge_temperature: Annotated[float | None, typer.Option(min=0.0, help="Judge temperature (default: FastChat's 0.2; MT-Bench 0).")] = None,
    judge_max_tokens: Annotated[int | None, typer.Option(min=1, help="Judge max tokens (default: 1024; MT-Bench 2048).")] = None,
    bootstrap: Annotated[int, typer.Option(min=0, help="Bootstrap resamples for the confidence intervals.")] = 1000,
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most (all roles together).")] = 32,
    request_timeout: Annotated[float, typer.Option(help="Seconds before one HTTP request times out and is retried.")] = 600.0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries on 429, 5xx, timeouts and resets.")] = 6,
    max_calls: Annotated[int | None, typer.Option(min=0, help="Stop after sending this many calls (rerun to continue).")] = None,
    batch: Annotated[str | None, typer.Option(help="Send the calls in provider batch rounds at batch prices: openai or anthropic (answers, then verdicts; resumable). See docs/BATCH.md.")] = None,
    batch_max_requests: Annotated[int | None, typer.Option(min=1, help="--batch: requests per batch at most (default: the provider's limit).")] = None,
    batch_poll: Annotated[float, typer.Option(min=0.001, help="--batch: seconds between looks at a submitted batch.")] = 60.0,
    estimate: Annotated[bool, typer.Option("--estimate", help="Print the planned calls by purpose, tokens, cost (online and batch) and time; send nothing, write nothing (EVAL_DIR is not created; a stored run in it is read).")] = False,
    prices: Annotated[Path | None, typer.Option(help='With --estimate: a price table JSON, {"MODEL or *": {"input": USD/1M tokens, "output": USD/1M tokens}}, for the cost range.')] = None,
    latency: Annotated[float | None, typer.Option(min=0.0, help="With --estimate: seconds per call for the time range (default: the last run's throughput in EVAL_DIR; without either, no time range).")] = None,
) -> None:
    """Answer a test set with the model and the reference, judge each pair, and report capacity per skill.

    Subcommands: human-sheet (a blind ranking sheet for people) and human-import (its statistics).
    """
    if ctx.invoked_subcommand is not None:
        return
    if out is None and not estimate:
        fail("missing option -o / --out EVAL_DIR")
    from ..calls import BudgetExhausted
    from ..evaluate.runner import POSITIONS, EvalConfig, run_eval
    from ..evaluate.testsets import TestsetError
    from ..report.eval_section import eval_page_html

    if position not in POSITIONS:
        fail(f"--position must be one of {', '.join(POSITIONS)}")
    config = EvalConfig(
        testset=testset, limit=limit, data_dir=str(data_dir) if data_dir else None,
        model=_spec("model", model_backend, model, model_base_url, model_api_key_env),
        reference=_spec("reference", reference_backend, reference, reference_base_url, reference_api_key_env),
        judge=_spec("judge", judge_backend, judge, judge_base_url, judge_api_key_env),
        temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
        reference_temperature=reference_temperature, reference_seed=reference_seed,
        judge_temperature=judge_temperature, judge_max_tokens=judge_max_tokens, position=position,
        judge_guide=judge_guide,
        bootstrap=bootstrap, concurrency=concurrency,
        request_timeout=request_timeout, max_retries=max_retries, max_calls=max_calls,
        batch=batch, batch_max_requests=batch_max_requests, batch_poll=batch_poll,
    )
    try:
        config.guided()  # a bad --judge-guide fails here, before EVAL_DIR is created
    except ValueError as exc:
        fail(str(exc))
    if estimate:
        from ..evolve.estimate import estimate_eval

        try:
            plan = estimate_eval(config, out, prices=str(prices) if prices else None, latency=latency)
        except (TestsetError, StoreError, BackendError, ValueError, OSError) as exc:
            fail(str(exc))
        display.print_estimate(plan.to_dict())
        return
    assert out is not None
    progress = display.eval_progress()
    task_id = None

    def on_start(n: int, resumed: bool) -> None:
        nonlocal task_id
        console.print(f"{'resuming' if resumed else 'evaluating'} {n} questions of {testset} -> {out}")
        task_id = progress.add_task("eval", total=n, unparsed=0, failed=0)
        progress.start()

    def on_item(p) -> None:
        if task_id is not None:
            progress.update(task_id, completed=p.done, unparsed=p.unparsed, failed=p.failed)

    with stops_cleanly(progress, (TestsetError, ConfigMismatch, StoreError, BackendError, ValueError)):
        try:
            results = run_eval(config, out, on_start=on_start, on_item=on_item)
        except BudgetExhausted:
            progress.stop()
            console.print("[yellow]stopped by --max-calls[/]: everything answered so far is stored; rerun to continue.")
            raise typer.Exit(3) from None
    progress.stop()
    write_text(out / "report.html", eval_page_html(results, f"evolinstruct eval: {testset}"))
    display.print_results(results, Console(), str(out))
    if results["failed_items"]:
        raise typer.Exit(3)  # incomplete: rerunning the command retries the failed calls


@eval_app.command("human-sheet")
def human_sheet(
    eval_dirs: Annotated[list[Path], typer.Argument(help="EVAL_DIRs: the first one's model and reference, plus the model of each further one.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="sheet.html (a form that saves a CSV) or sheet.csv.")],
    key: Annotated[Path | None, typer.Option(help="Where the answer key goes (default: next to the sheet, NAME.key.json). Keep it from the raters.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the shuffle.")] = 0,
    limit: Annotated[int | None, typer.Option(min=1, help="Only the first N questions.")] = None,
) -> None:
    """Write a blind ranking sheet: answers shuffled and anonymised as A, B, ... per question."""
    from ..evaluate.human import HumanEvalError, write_sheet

    try:
        key_path, n_items, systems = write_sheet(eval_dirs, out, key, seed=seed, limit=limit)
    except HumanEvalError as exc:
        fail(str(exc))
    console.print(f"wrote {out}: {n_items} questions x {len(systems)} answers; key (keep it from raters): {key_path}")


@eval_app.command("human-import")
def human_import(
    sheet: Annotated[Path, typer.Argument(help="A filled sheet (CSV).")],
    key: Annotated[Path, typer.Option(help="The key file written with the sheet.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="Write the statistics as JSON here.")] = None,
) -> None:
    """Read a filled sheet and compute the ranking statistics: mean rank and win rates, per criterion."""
    from ..evaluate.human import HumanEvalError, import_sheet

    try:
        stats = import_sheet(sheet, key)
    except HumanEvalError as exc:
        fail(str(exc))
    if out:
        try:
            write_json(out, stats)
        except OutputError as exc:
            fail(str(exc))
    display.print_human_stats(stats, Console())
