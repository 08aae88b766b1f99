"""bench/simserver.py processes for the scale tests: start one on a port (or a free one), stop it, restart it.

Each is a real OpenAI-compatible server over loopback with deterministic answers (a hash of the request), so
runs against one, three or a changing set of them must produce the same dataset byte for byte.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIMSERVER = ROOT / "bench" / "simserver.py"


@dataclass
class Sim:
    proc: subprocess.Popen
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"


def launch(*args: str, log: Path | None = None) -> tuple[subprocess.Popen, str]:
    """The one way tests start bench/simserver.py: with `args`, in its own process group, stderr kept in
    `log` (if given). Returns the process and its root URL once it listens (no /v1)."""
    err = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115 - the child holds it; closed below
    try:
        proc = subprocess.Popen([sys.executable, str(SIMSERVER), *args],
                                stdout=subprocess.PIPE, stderr=err, start_new_session=True)
    finally:
        if log:
            err.close()
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        said = log.read_text(errors="replace") if log else ""
        raise AssertionError(f"simserver did not start: {line!r} {said}")
    return proc, line.split("listening on ", 1)[1].strip()


def start_sim(port: int = 0, latency: float = 0.05, slots: int = 64, sigma: float = 0.0) -> Sim:
    """A simulation server; `port` 0 picks a free one. Returns once it listens."""
    proc, url = launch("--port", str(port), "--latency-mean", str(latency), "--sigma", str(sigma), "--slots", str(slots))
    return Sim(proc, int(url.rsplit(":", 1)[1]))


def stop_sim(sim: Sim, sig: int = signal.SIGTERM) -> None:
    if sim.proc.poll() is None:
        try:
            os.killpg(sim.proc.pid, sig)
        except ProcessLookupError:
            pass
    sim.proc.wait(timeout=30)


def write_seeds(path: Path, n: int) -> Path:
    """`n` distinct seed instructions as JSONL."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"instruction": f"Explain step {i} of making bread at home, with care.", "input": ""}) + "\n")
    return path
