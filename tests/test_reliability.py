"""Hardening against real processes: one writer per run directory."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.evolve.config import Algorithm, EvolveConfig, Source
from evolinstruct.evolve.config import Roles as RoleSpecs
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec
from evolinstruct.store import RunStore, StoreError

SRC = Path(__file__).resolve().parents[1] / "src"
HOLD = "import sys, time; from evolinstruct.store import RunStore; s = RunStore(sys.argv[1]); print('held', flush=True); time.sleep(60)"


def _holder(run_dir: Path) -> subprocess.Popen:
    """Another process that opens the run for writing and keeps it open."""
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _seeds(tmp_path: Path) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(f'{{"instruction": "Explain topic number {i} in detail."}}\n' for i in range(3)))
    return path


def test_a_second_writer_is_refused_naming_the_holder(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    try:
        with pytest.raises(StoreError, match=f"in use by pid {holder.pid}"):
            RunStore(run_dir)
        result = CliRunner().invoke(app, ["evolve", str(_seeds(tmp_path)), "-o", str(run_dir), "--epochs", "1"])
        assert result.exit_code == 2
        assert f"in use by pid {holder.pid}" in result.output and "Traceback" not in result.output
        # A reader (the report) is never blocked by the writer.
        RunStore(run_dir, readonly=True).close()
    finally:
        holder.kill()
        holder.wait()


def test_a_killed_writers_lock_does_not_block(tmp_path: Path, scripted) -> None:
    scripted()
    run_dir = tmp_path / "run"
    holder = _holder(run_dir)
    os.kill(holder.pid, signal.SIGKILL)  # no chance to clean up: the kernel drops the lock
    holder.wait()
    assert (run_dir / "run.lock").read_text().strip() == str(holder.pid)  # the stale pid is still written
    config = EvolveConfig(source=Source(seeds=str(_seeds(tmp_path))), algorithm=Algorithm(epochs=1),
                          roles=RoleSpecs(evolver=ModelSpec(backend="scripted", model="s")))
    started = time.monotonic()
    stats = run_evolve(config, run_dir)
    assert stats["seeds"] == 3 and time.monotonic() - started < 30
    # Closed stores release the lock: the same process can open the run again at once.
    RunStore(run_dir).close()
