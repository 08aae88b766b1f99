"""Helpers shared by the kill-and-resume tests."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evolinstruct.store import RunStore

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "seeds.jsonl"
# The `evolinstruct` command as a subprocess: the console script beside this interpreter (what users
# run), else the same entry point through -c (`evolinstruct.cli` is a package with no __main__).
_SCRIPT = Path(sys.executable).with_name("evolinstruct")
CLI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-c", "from evolinstruct.cli import app; app()"]


def stored_calls(run_dir: Path) -> int:
    db = run_dir / "run.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            return conn.execute("SELECT COUNT(*) FROM calls").fetchone()[0]
    except sqlite3.OperationalError:  # the schema is not created yet
        return 0


def kill_after(cmd: list[str], run_dir: Path, min_calls: int, timeout: float = 300) -> int:
    """Start `cmd`, SIGKILL it once `min_calls` calls are stored, return how many were stored."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while stored_calls(run_dir) < min_calls:
            if proc.poll() is not None:
                raise AssertionError(f"run ended before it could be killed: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                raise AssertionError("run stored too few calls before the timeout")
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    return stored_calls(run_dir)


def kill_then_resume(cmd: list[str], run_dir: Path, min_calls: int, timeout: float) -> dict:
    """SIGKILL `cmd` once `min_calls` are stored, rerun it to the end and check that the rerun sent no stored
    call again and left no seed-epoch unattempted; returns the rerun's stats.json."""
    import json

    stored = kill_after(cmd, run_dir, min_calls=min_calls)
    assert not (run_dir / "stats.json").exists()  # it really died before the end
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["resumed"] is True and stats["cache_hits"] >= stored
    assert stored_calls(run_dir) == stored + stats["llm_calls"]  # no stored call was sent again
    assert stats["evolutions"]["not_attempted"] == 0
    return stats


def replay_into(src: Path, dst: Path) -> None:
    """Give a fresh RUN_DIR the stored answers of another run, so both runs see the same LLM answers."""
    RunStore(dst).close()  # creates the schema
    with sqlite3.connect(dst / "run.sqlite") as conn:
        conn.execute("ATTACH DATABASE ? AS src", (str(src / "run.sqlite"),))
        conn.execute("INSERT INTO calls SELECT * FROM src.calls")


@contextmanager
def simserver(log_dir: Path, *args: str) -> Iterator[str]:
    """bench/simserver.py with `args` on a free loopback port: its /v1 URL; stopped (its group) after."""
    from simfleet import launch

    proc, url = launch("--port", "0", *args, log=log_dir / "simserver.log")
    try:
        yield url + "/v1"
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
