"""What every command shares: one stderr console, the one-line error, and stopping a live progress bar cleanly."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.progress import Progress

console = Console(stderr=True)

RESUME_HINT = "everything finished so far is stored; rerun the same command to resume."


def fail(message: str) -> NoReturn:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def stops_cleanly(
    progress: Progress, errors: tuple[type[BaseException], ...], interrupted: str = RESUME_HINT
) -> Iterator[None]:
    """A command's work under its progress bar: an expected error ends in one line and exit 2, Ctrl-C in exit 130."""
    try:
        yield
    except errors as exc:
        progress.stop()
        fail(str(exc))
    except KeyboardInterrupt:
        progress.stop()
        console.print(f"[yellow]interrupted[/]: {interrupted}")
        raise typer.Exit(130) from None
