"""What every command shares: one stderr console, the one-line error, and stopping a live progress bar cleanly."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

console = Console(stderr=True)

RESUME_HINT = "everything finished so far is stored; rerun the same command to resume."
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143  # 128 + SIGTERM


def fail(message: str) -> NoReturn:
    # The message is text, never markup: a URL, a server's answer or "[redacted]" prints as it is.
    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


@contextmanager
def sigterm_as_ctrl_c() -> Iterator[list[int]]:
    """While the block runs, SIGTERM (kill, systemd, docker stop, a batch scheduler) stops it as Ctrl-C does:
    it calls the current SIGINT handler. Inside `asyncio.run` that handler cancels the main task, so every
    chain unwinds through its `finally` (the store closes; each finished call was committed when it ended)
    and `KeyboardInterrupt` comes out after; elsewhere it raises `KeyboardInterrupt` at once. A second
    signal raises at once, as a second Ctrl-C does. Yields a list that holds the signal numbers received."""
    received: list[int] = []
    if threading.current_thread() is not threading.main_thread():
        yield received  # signal handlers can only be set from the main thread
        return

    def on_sigterm(signum: int, frame) -> None:
        received.append(signum)
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler) and len(received) == 1:
            handler(signal.SIGINT, frame)  # asyncio's handler cancels the main task; the default one raises
        else:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield received
    finally:
        signal.signal(signal.SIGTERM, previous)


def interrupted_exit(received: list[int]) -> int:
    """The exit status of a stopped command: 143 after SIGTERM, 130 after Ctrl-C."""
    return EXIT_TERMINATED if received else EXIT_INTERRUPTED


@contextmanager
def stops_cleanly(
    progress: Progress, errors: tuple[type[BaseException], ...], interrupted: str = RESUME_HINT
) -> Iterator[None]:
    """A command's work under its progress bar: an expected error ends in one line and exit 2; Ctrl-C in the
    'interrupted' line and exit 130; SIGTERM in the same line and exit 143."""
    with sigterm_as_ctrl_c() as received:
        try:
            yield
        except errors as exc:
            _stop(progress)
            fail(str(exc))
        except KeyboardInterrupt:
            _stop(progress)
            console.print(f"[yellow]interrupted[/]: {interrupted}", highlight=False, soft_wrap=True)
            raise typer.Exit(interrupted_exit(received)) from None


def _stop(progress: Progress) -> None:
    """Stop the bar if it ever started: stopping one that did not prints an empty line off a terminal."""
    if progress.live.is_started:
        progress.stop()
