"""`evolinstruct merge`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ..store import ConfigMismatch, StoreError
from . import display
from .console import fail


def merge_cmd(
    shards: Annotated[list[Path], typer.Argument(help="The shards' RUN_DIRs (evolve --shard I/N), every one of them.")],
    out: Annotated[Path, typer.Option("-o", "--out", help="RUN_DIR of the merged run (score, filter, report, export take it).")],
) -> None:
    """Join the shards of a run into one RUN_DIR: one store, dataset.jsonl and stats.json, as one unsharded run."""
    from ..evolve.merge import merge_runs

    try:
        stats = merge_runs(shards, out)
    except (StoreError, ConfigMismatch, ValueError, OSError) as exc:
        fail(str(exc))
    display.print_evolve_summary(stats, out)
