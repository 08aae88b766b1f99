#!/usr/bin/env python3
"""Sandbox benchmark for `evolve --task code --exec-check` (evolve/sandbox.py).

1. Executions per second with the default limits: a typical answer (a function and three asserts) run
   N times one after another, then N times through the chain's thread pool (as a run does).
2. The code task's wall time with --exec-check off vs on, through the CLI at C=64 against bench/simserver.py.
   The simulation server answers in prose, which the code task eliminates (no_code) before any run; this
   script starts it with its answer maker replaced (in the server process only) by one that writes code:
   evolving prompts (#Given Test#) get a harder question back, answers get a fenced Python block with asserts
   (85%), code that raises (8%), JavaScript (5%, not run) or code that sleeps past the time limit (2%).
   Target: --exec-check on takes at most 1.3x the wall time of off.

Usage: python bench/sandbox_bench.py [--execs 200] [--seeds 1000] [--epochs 2] [--latency 0.5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_PY = ROOT / ".venv" / "bin" / "python"
EVOLINSTRUCT = ROOT / ".venv" / "bin" / "evolinstruct"
SEEDS = ROOT.parent / "shared" / "data" / "seeds" / "codealpaca_2k.json"

ANSWER = '''def running_max(values):
    """The largest value seen so far, at each position."""
    out, best = [], None
    for v in values:
        best = v if best is None or v > best else best
        out.append(best)
    return out


assert running_max([]) == []
assert running_max([3, 1, 4, 1, 5]) == [3, 3, 4, 4, 5]
assert running_max([-2, -5]) == [-2, -2]
'''

# ------------------------------------------------------------------------------ the server's code answers
_GIVEN = re.compile(r"#Given Test#\n(.*?)\n\n#(?:Rewritten|Created) Test#", re.S)
SUFFIXES = (" The input may be empty.", " Do it in O(n) time.", " Do not use built-in sort.",
            " Return a new list; leave the input unchanged.", " Handle negative numbers too.")


def sim_answer(prompt: str, rng: random.Random) -> str:
    """simserver's make_answer, for code: evolutions of #Given Test# prompts and answers with code."""
    if m := _GIVEN.search(prompt):
        words = m.group(1).split()[:90]  # keep chains from growing without bound
        return " ".join(words).rstrip(".") + "." + rng.choice(SUFFIXES)
    u = rng.random() * (0.98 + float(os.environ.get("SANDBOX_BENCH_SLEEPERS", "0.02")))  # 0: no sleepers
    if u < 0.85:
        return f"Here is a solution:\n```python\n{ANSWER}```\nThe asserts check it."
    if u < 0.93:
        return "```python\ndef first(values):\n    return values[0]\n\nprint(first([]))\n```"
    if u < 0.98:
        return "```javascript\nconst first = (v) => v[0];\nconsole.log(first([1, 2]));\n```"
    return "```python\nimport time\n\ndef slow():\n    time.sleep(60)\n\nslow()\n```"


class CodeSim:
    """bench/simserver.py in a subprocess, answering with code (sim_answer)."""

    def __init__(self, latency: float, slots: int = 256, sigma: float = 0.5) -> None:
        self.args = ["--port", "0", "--slots", str(slots), "--latency-mean", str(latency), "--sigma", str(sigma)]

    def __enter__(self) -> CodeSim:
        boot = ("import sys; sys.path[:0] = [sys.argv.pop(1)]; import simserver, sandbox_bench; "
                "simserver.make_answer = sandbox_bench.sim_answer; simserver.main(sys.argv[1:])")
        self.proc = subprocess.Popen([str(VENV_PY), "-c", boot, str(BENCH), *self.args], stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"sim server did not start: {line!r}")
        self.base_url = line.split("listening on ", 1)[1].strip() + "/v1"
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)


# ------------------------------------------------------------------------------ 1. executions per second
def executions(n: int) -> dict:
    from evolinstruct.evolve.sandbox import isolation, run_python
    from evolinstruct.evolve.tasks.code import sandbox_pool

    iso = isolation()
    assert run_python(ANSWER).outcome == "ok"
    times = []
    started = time.perf_counter()
    for _ in range(n):
        t = time.perf_counter()
        result = run_python(ANSWER)
        times.append(time.perf_counter() - t)
        assert result.outcome == "ok", result
    sequential = n / (time.perf_counter() - started)
    pool = sandbox_pool()
    started = time.perf_counter()
    outcomes = list(pool.map(lambda _i: run_python(ANSWER).outcome, range(n)))
    parallel = n / (time.perf_counter() - started)
    assert set(outcomes) == {"ok"}
    times.sort()
    return {
        "isolation": f"network {iso.network}, filesystem {iso.filesystem}", "cpus": os.cpu_count(),
        "execs": n, "sequential_per_s": round(sequential, 1), "pool_workers": pool._max_workers,
        "parallel_per_s": round(parallel, 1), "latency_ms_p50": round(1000 * statistics.median(times), 1),
        "latency_ms_p95": round(1000 * times[int(0.95 * (len(times) - 1))], 1),
    }


# ------------------------------------------------------------------------------ 2. a run, exec-check off vs on
def code_run(sim: CodeSim, seeds: int, epochs: int, concurrency: int, exec_check: bool) -> dict:
    out = Path(tempfile.mkdtemp(prefix="evolinstruct-sandbox-bench-")) / "run"
    cmd = [str(EVOLINSTRUCT), "evolve", str(SEEDS), "-o", str(out), "--task", "code", "--backend", "openai",
           "--base-url", sim.base_url, "--model", "sim", "--concurrency", str(concurrency), "--epochs", str(epochs),
           "--limit", str(seeds), "--max-tokens", "256", *(["--exec-check"] if exec_check else [])]
    started = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"evolve failed ({done.returncode}): {done.stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    shutil.rmtree(out.parent, ignore_errors=True)
    return {"exec_check": exec_check, "wall_s": round(wall, 2), "run_s": stats["seconds"],
            "calls": stats["llm_calls"], "kept": stats["kept"], "sandbox": stats["task"].get("sandbox", {}),
            "rules": stats["task"]["rules"]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--execs", type=int, default=200)
    p.add_argument("--seeds", type=int, default=1000)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--concurrency", type=int, default=64)
    p.add_argument("--latency", type=float, default=0.5, help="the server's mean latency (s)")
    p.add_argument("--repeat", type=int, default=2, help="runs of each, alternating off/on; the median counts")
    p.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = p.parse_args()

    ex = executions(args.execs)
    print(f"sandbox ({ex['isolation']}; {ex['cpus']} CPUs): {ex['sequential_per_s']} executions/s one at a time "
          f"(p50 {ex['latency_ms_p50']} ms, p95 {ex['latency_ms_p95']} ms), {ex['parallel_per_s']}/s with "
          f"{ex['pool_workers']} threads")
    runs: list[dict] = []
    with CodeSim(args.latency) as sim:
        for _ in range(args.repeat):
            for exec_check in (False, True):
                runs.append(code_run(sim, args.seeds, args.epochs, args.concurrency, exec_check))
                r = runs[-1]
                print(f"  exec-check {'on ' if exec_check else 'off'}: {r['wall_s']:6.2f} s wall, {r['calls']} calls, "
                      f"{r['kept']} kept, sandbox {r['sandbox']}, eliminated {r['rules']}")
    off = statistics.median(r["wall_s"] for r in runs if not r["exec_check"])
    on = statistics.median(r["wall_s"] for r in runs if r["exec_check"])
    ratio = on / off
    print()
    print(f"| C={args.concurrency}, L={args.latency} s, {args.seeds} seeds x {args.epochs} epochs | wall (median of "
          f"{args.repeat}) |")
    print("| --- | --- |")
    print(f"| --exec-check off | {off:.2f} s |")
    print(f"| --exec-check on | {on:.2f} s |")
    print(f"| on / off | {ratio:.2f}x (target <= 1.3x: {'met' if ratio <= 1.3 else 'NOT met'}) |")
    if args.json:
        args.json.write_text(json.dumps({"executions": ex, "runs": runs, "off_s": off, "on_s": on, "ratio": ratio},
                                        indent=1))
    return 0 if ratio <= 1.3 else 1


if __name__ == "__main__":
    sys.exit(main())
