"""`evolinstruct export`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, fail


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    fmt: Annotated[str, typer.Option("--format", "-f", help="alpaca, sharegpt or openai.")] = "alpaca",
    out: Annotated[Path, typer.Option("-o", "--out", help="Output JSONL file.")] = Path("export.jsonl"),
) -> None:
    """Export the training mix in a fine-tuning format."""
    from ..evolve.export import export

    try:
        n = export(run_dir, fmt, out)
    except (OSError, ValueError) as exc:  # OutputError (a directory, a device, a full disk) is both
        fail(str(exc))
    console.print(f"wrote {n} rows ({fmt}) to {out}")
