"""Every path in a RUN_DIR, the atomic writers everyone uses, and the one writer of stats.json.

RUN_DIR/
  run.sqlite            the run store (store.py): every call, record, score, the bound config
  run.lock              the pid of the process writing the run, locked while it runs
  dataset.jsonl         the training mix (kept records)       eliminated.jsonl   failed evolutions
  errors.jsonl          calls that failed after retries       stats.json         counts, by every command
  filtered/NAME/        `evolinstruct filter` subsets: dataset.jsonl, removed.jsonl, filter_stats.json
  report.html           `evolinstruct report`'s default output

Files are written to a temporary name beside the target and renamed, so a reader never sees half a file;
on any error the temporary file is removed. Only regular files are written: a directory, a device or a
pipe given as an output is refused with one line (`OutputError`), never replaced.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

STORE_FILE = "run.sqlite"
LOCK_FILE = "run.lock"  # held by the one process that writes the run (store.py)
DATASET = "dataset.jsonl"
ELIMINATED = "eliminated.jsonl"
ERRORS = "errors.jsonl"
STATS = "stats.json"
REPORT = "report.html"
FILTERED = "filtered"
REMOVED = "removed.jsonl"
FILTER_STATS = "filter_stats.json"

_PLAIN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


class RunDir:
    """A run directory's paths. It creates nothing: writers make what they write."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __truediv__(self, name: str) -> Path:
        return self.path / name

    def __str__(self) -> str:
        return str(self.path)

    @property
    def store(self) -> Path:
        return self.path / STORE_FILE

    @property
    def dataset(self) -> Path:
        return self.path / DATASET

    @property
    def eliminated(self) -> Path:
        return self.path / ELIMINATED

    @property
    def errors(self) -> Path:
        return self.path / ERRORS

    @property
    def stats(self) -> Path:
        return self.path / STATS

    @property
    def report(self) -> Path:
        return self.path / REPORT

    @property
    def filtered_root(self) -> Path:
        return self.path / FILTERED

    def filtered(self, name: str) -> Path:
        """A filter subset's directory; `name` must be a plain name (no path parts)."""
        if not _PLAIN_NAME.match(name or "") or name in (".", ".."):
            raise ValueError(f"--name '{name}': use a plain name (letters, digits, '.', '_', '-'), not a path")
        return self.path / FILTERED / name

    def read_stats(self) -> dict[str, Any]:
        path = self.stats
        return json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}


class OutputError(OSError, ValueError):
    """A file or folder that cannot be written where asked; the message is one line naming it and what to do.

    An OSError (it is one) and a ValueError, so every command's one-line error catches it (as
    io.UnsupportedOperation is both)."""


def _why(path: Path, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.ENOSPC or exc.errno == errno.EDQUOT:
        return f"{path}: cannot write: {reason}: the disk is full; free space and rerun (finished work is kept)"
    if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"{path}: cannot write: {reason}: the location is read-only; choose a writable one"
    return f"{path}: cannot write: {reason}"


def check_output_file(path: str | Path) -> Path:
    """`path` as an output file: absent, or a regular file (replaced). A folder, a device, a pipe or a socket is
    refused, so an output never replaces a directory or /dev/null."""
    path = Path(path)
    if path.exists() and not path.is_file():
        kind = "a directory" if path.is_dir() else "not a regular file"
        raise OutputError(f"{path}: is {kind}; give a file path to write (only regular files are written)")
    return path


def check_output_dir(path: str | Path) -> Path:
    """`path` as an output folder: absent (made later) or a directory; a file there is refused in one line."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{path}: exists and is not a directory; give a directory path")
    return path


def make_output_dir(path: str | Path) -> Path:
    """Create the folder `path` (and its parents) for outputs; an existing file there is refused in one line."""
    path = check_output_dir(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(_why(path, exc)) from None
    return path


def _tmp(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass


@contextmanager
def atomic_files(paths: Iterable[str | Path]) -> Iterator[list[IO[str]]]:
    """Text files written under temporary names beside their targets, each renamed over its target once the
    block ended without an error and every file is complete. On any error (in the block, writing, closing,
    renaming) every temporary file is removed, and a target not yet renamed is left as it was; a failed
    write comes out as an OutputError naming the file."""
    targets = [check_output_file(p) for p in paths]
    handles: list[IO[str]] = []
    current = targets[0] if targets else Path()
    try:
        for target in targets:
            current = target
            handles.append(open(_tmp(target), "w", encoding="utf-8"))
        try:
            yield handles
        except OSError as exc:
            if exc.filename is not None and Path(exc.filename) not in {_tmp(t) for t in targets}:
                raise _Passthrough(exc) from None  # someone else's file (a source being read): not ours to name
            raise
        for target, handle in zip(targets, handles, strict=True):
            current = target
            handle.close()  # a full disk may only show here, when the buffer is flushed
        for target in targets:
            current = target
            os.replace(_tmp(target), target)
    except _Passthrough as wrapped:
        _discard(targets, handles)
        raise wrapped.exc from None
    except OutputError:
        _discard(targets, handles)
        raise
    except OSError as exc:
        _discard(targets, handles)
        raise OutputError(_why(current, exc)) from None
    except BaseException:
        _discard(targets, handles)
        raise


class _Passthrough(Exception):
    def __init__(self, exc: OSError) -> None:
        self.exc = exc


def _discard(targets: list[Path], handles: list[IO[str]]) -> None:
    for handle in handles:
        try:
            handle.close()
        except OSError:
            pass
    for target in targets:
        _unlink_quietly(_tmp(target))


@contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[str]]:
    """One text file written atomically (see `atomic_files`)."""
    with atomic_files([path]) as (handle,):
        yield handle


def write_atomic_lines(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """JSON lines, one per row; returns how many. Nothing is left behind if `rows` raises."""
    n = 0
    with atomic_file(path) as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
            n += 1
    return n


def write_json(path: str | Path, data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True) + "\n"
    write_text(path, text)


def write_text(path: str | Path, text: str) -> None:
    with atomic_file(path) as f:
        f.write(text)


def write_stats(run_dir: str | Path, stats: dict[str, Any] | Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """The one writer of stats.json: a whole new stats dict (evolve), or a function that updates the
    current one (score and later commands add their sections next to evolve's numbers)."""
    rd = RunDir(run_dir)
    new = stats(rd.read_stats()) if callable(stats) else stats
    write_json(rd.stats, new)
    return new


def read_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """The rows of a JSONL file we wrote (dataset.jsonl and the like), streamed; a bad line is one error
    naming the file and line."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{lineno}: malformed JSON line: {exc.msg}") from None

