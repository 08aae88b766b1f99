"""`evolinstruct report`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from .console import console, fail


def report_cmd(
    run_dir: Annotated[Path, typer.Argument(help="A RUN_DIR written by `evolinstruct evolve`, or an OPT_DIR of `evolinstruct optimize`.")],
    out: Annotated[Path | None, typer.Option("-o", "--out", help="The HTML file to write (default: RUN_DIR/report.html).")] = None,
    eval_dirs: Annotated[list[Path] | None, typer.Option("--eval", help="An EVAL_DIR holding results.json (repeatable).")] = None,
    diversity_map: Annotated[bool, typer.Option("--map/--no-map", help="Embed the instructions for the diversity map (a few seconds).")] = True,
    map_limit: Annotated[int, typer.Option(min=3, help="Most instructions on the diversity map (a random sample beyond).")] = 2000,
    tree_limit: Annotated[int, typer.Option(min=1, help="Most seeds in the evolution-tree browser (keeps the page light).")] = 1000,
) -> None:
    """Write one self-contained HTML report of a run: difficulty, operations, eliminations, diversity, trees."""
    from ..report import ReportError, build_report

    target = out or run_dir / "report.html"
    opt_dir = (run_dir / "history.jsonl").is_file() or (run_dir / "initial_method.json").is_file()
    if opt_dir and not (run_dir / "dataset.jsonl").exists():
        _optimize_report(run_dir, target)  # an OPT_DIR of `evolinstruct optimize` (initial_method.json: from its start)
        return
    try:
        info = build_report(run_dir, target, eval_dirs or [], diversity_map=diversity_map,
                            map_limit=map_limit, tree_limit=tree_limit)
    except ReportError as exc:
        fail(str(exc))
    except OSError as exc:  # OutputError: -o a directory or a device, a read-only RUN_DIR, a full disk
        fail(f"{exc}" + ("" if out else "; pass -o FILE to write the report elsewhere"))
    console.print(f"wrote {target} ({info['bytes'] / 1024:.0f} KB, {info['records']} records) in {info['seconds']:.1f}s")


def _optimize_report(opt_dir: Path, target: Path) -> None:
    """The optimization's page: success and score per step, accepted steps, the method's diffs, the holdout."""
    from ..report import ReportError
    from ..report.optimize_page import build_optimize_report

    try:
        info = build_optimize_report(opt_dir, target)
    except ReportError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(str(exc))
    console.print(f"wrote {target} ({info['bytes'] / 1024:.0f} KB, {info['steps']} steps) in {info['seconds']:.1f}s")
