"""`evolinstruct score`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..evolve.templates import TemplateError
from ..models import BackendError
from ..store import ConfigMismatch, StoreError
from . import display
from .console import console, fail, stops_cleanly


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
    max_tokens: Annotated[int | None, typer.Option(min=1, help="Max new tokens per scoring call (default: 16 for difficulty, 8 per item for rankings; guided: 4, and 10 per item).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Score only the first N records.")] = None,
    include_eliminated: Annotated[bool, typer.Option("--include-eliminated", help="Score eliminated evolutions too.")] = False,
    guide: Annotated[str, typer.Option(help=(
        "Guided answers: the model must open with its score, '7' then a newline for difficulty, DEITA's "
        "'[1] Score: 2' lines for rankings (enforced while decoding; the model still picks the numbers). "
        "auto: on when the model's backend can guide (the in-process local backend: the embedded model is "
        "too small to follow the prompt's format unguided); off for a served model, which keeps the paper's "
        "free-text answers. on: fails in one line for a model that cannot be guided. See docs/QUALITY.md."))] = "auto",
    batch: Annotated[str | None, typer.Option(help="Send the scoring calls in provider batches at batch prices: openai or anthropic (one round; resumable). See docs/BATCH.md.")] = None,
    batch_max_requests: Annotated[int | None, typer.Option(min=1, help="--batch: requests per batch at most (default: the provider's limit).")] = None,
    batch_poll: Annotated[float, typer.Option(min=0.001, help="--batch: seconds between looks at a submitted batch.")] = 60.0,
    estimate: Annotated[bool, typer.Option("--estimate", help="Print the planned calls, tokens, cost and time of the LLM scorers; send nothing, write nothing.")] = False,
    prices: Annotated[Path | None, typer.Option(help="With --estimate: a price table JSON (as evolve's --prices) for the cost range.")] = None,
    latency: Annotated[float | None, typer.Option(min=0.0, help="With --estimate: seconds per call for the time range.")] = None,
) -> None:
    """Score a run's records (default: --heuristics --difficulty); dataset.jsonl and stats.json get the scores."""
    from ..quality.score import ScoreOptions, run_score

    options = ScoreOptions(
        difficulty=difficulty, complexity=complexity, quality=quality, heuristics=heuristics, backend=backend,
        model=model, base_url=base_url, api_key_env=api_key_env, concurrency=concurrency, max_tokens=max_tokens,
        limit=limit, include_eliminated=include_eliminated, guide=guide,
        batch=batch, batch_max_requests=batch_max_requests, batch_poll=batch_poll,
    )
    if estimate:
        from ..evolve.estimate import estimate_score

        try:
            plan = estimate_score(run_dir, options, prices=str(prices) if prices else None, latency=latency)
        except (FileNotFoundError, StoreError, BackendError, TemplateError, ValueError) as exc:
            fail(str(exc))
        display.print_estimate(plan.to_dict())
        return
    progress = display.score_progress()
    task_id = None

    def on_start(n_records: int, n_jobs: int, model_label: str, endpoint: str, guided: bool | None) -> None:
        nonlocal task_id
        where = f" at {endpoint}" if endpoint else ""
        how = " (guided)" if guided else ""
        console.print(f"scoring {n_records} records ({', '.join(options.scorers())}) with {model_label}{where}{how} -> {run_dir}")
        if n_jobs:
            task_id = progress.add_task("score", total=n_jobs, unparsed=0)
            progress.start()

    def on_progress(p) -> None:
        if task_id is not None:
            progress.update(task_id, completed=p.done, unparsed=sum(p.parse_failures.values()))

    with stops_cleanly(progress, (FileNotFoundError, ConfigMismatch, StoreError, BackendError, TemplateError, ValueError),
                       interrupted="every finished call is stored; rerun the same command to resume."):
        stats = run_score(run_dir, options, on_start=on_start, on_progress=on_progress)
    progress.stop()
    display.print_score_summary(stats, run_dir)
    run = stats["score_run"]
    console.print(f"llm calls: {run['llm_calls']} sent, {run['cache_hits']} from cache; scores -> {run_dir / 'dataset.jsonl'}")
    if run["call_failures"]:
        console.print("[red]some calls failed[/]: rerun the same command to retry them.")
        raise typer.Exit(3)
