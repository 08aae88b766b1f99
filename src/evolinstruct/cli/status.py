"""`evolinstruct status`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from . import display
from .console import fail


def status_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    prices: Annotated[Path | None, typer.Option(help="Price table JSON, to show the cost so far (as for evolve).")] = None,
) -> None:
    """Where a run stands: its provider batches (open ones with their status and counts), batch rounds done,
    calls, records, and the cost so far. Reads the run store only; safe while the run is going."""
    from ..batches import run_status
    from ..calls import load_prices
    from ..store import RunStore, StoreError

    try:
        table = load_prices(str(prices)) if prices else None
        store = RunStore(run_dir, readonly=True)
    except (StoreError, ValueError) as exc:
        fail(str(exc))
    try:
        info = run_status(store, table)
    finally:
        store.close()
    display.print_status(info, run_dir)
