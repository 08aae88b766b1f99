"""The `evolinstruct` command line: one module per command; every table and progress bar is in display.py."""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from .eval import eval_app
from .evolve import evolve
from .export import export_cmd
from .filter import filter_cmd
from .merge import merge_cmd
from .optimize import optimize
from .report import report_cmd
from .score import score
from .serve import serve_cmd
from .status import status_cmd
from .train import train_cmd

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Evol-Instruct (WizardLM), end to end.")


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


app.command("evolve")(evolve)
app.command("export")(export_cmd)
app.command("train")(train_cmd)
app.command("score")(score)
app.command("report")(report_cmd)
app.command("filter")(filter_cmd)
app.command("optimize")(optimize)
app.command("merge")(merge_cmd)
app.command("serve")(serve_cmd)
app.add_typer(eval_app, name="eval")
app.command("status")(status_cmd)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(app())
