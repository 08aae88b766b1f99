"""`evolinstruct report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, fail


def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="The HTML file to write (default: RUN_DIR/report.html).")] = None,
    eval_dirs: Annotated[list[Path] | None, typer.Option("--eval", help="An EVAL_DIR holding results.json (repeatable).")] = None,
    diversity_map: Annotated[bool, typer.Option("--map/--no-map", help="Embed the instructions for the diversity map (a few seconds).")] = True,
    map_limit: Annotated[int, typer.Option(min=3, help="Most instructions on the diversity map (a random sample beyond).")] = 2000,
    tree_limit: Annotated[int, typer.Option(min=1, help="Most seeds in the evolution-tree browser (keeps the page light).")] = 1000,
) -> None:
    """Write one self-contained HTML report of a run: difficulty, operations, eliminations, diversity, trees."""
    from ..report import ReportError, build_report

    target = out or run_dir / "report.html"
    try:
        info = build_report(run_dir, target, eval_dirs or [], diversity_map=diversity_map,
                            map_limit=map_limit, tree_limit=tree_limit)
    except ReportError as exc:
        fail(str(exc))
    except OSError as exc:  # OutputError: -o a directory or a device, a read-only RUN_DIR, a full disk
        fail(f"{exc}" + ("" if out else "; pass -o FILE to write the report elsewhere"))
    console.print(f"wrote {target} ({info['bytes'] / 1024:.0f} KB, {info['records']} records) in {info['seconds']:.1f}s")
