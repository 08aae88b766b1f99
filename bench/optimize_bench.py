#!/usr/bin/env python3
"""`evolinstruct optimize` against the simulation server: calls and wall time per optimization step at C=64,
against the ideal of the step's dependency structure.

A step's calls form a graph (loop.py): the trajectory (batch x rounds evolutions, a chain per instruction)
and, on the first step, the current method's dev set (evolve, then judge and answer at once, per item);
then per candidate: analysis -> optimization -> its dev set. With a constant latency L (--sigma 0) and C
server slots, the ideal wall time is L x the ticks of an as-soon-as-ready schedule of that graph on C
slots (`ideal_ticks`). The optimizer must come within 0.8 of it: candidates and dev items in flight at once.

Run alone: `python bench/optimize_bench.py` (about a minute), or as `bench/run.py --sections optimize`.
"""

from __future__ import annotations

import json
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEEDS = ROOT.parent / "shared" / "data" / "seeds" / "alpaca_52k.json"
EXAMPLES = ROOT / "examples" / "seeds.jsonl"
TARGET = 0.8


def ideal_ticks(*, first: bool, batch: int, rounds: int, candidates: int, dev: int, slots: int,
                judged: bool = True) -> int:
    """Ticks of a greedy as-soon-as-ready schedule of one step's calls on `slots` unit-time slots."""
    per_item = 3 if judged else 2  # evolve, then (judge, answer) at once
    # tasks: name -> (dependencies); built level by level, then scheduled greedily
    deps: dict[str, list[str]] = {}

    def dev_set(prefix: str, after: list[str]) -> list[str]:
        ends = []
        for i in range(dev):
            deps[f"{prefix}e{i}"] = after
            for j in range(per_item - 1):
                deps[f"{prefix}x{i}.{j}"] = [f"{prefix}e{i}"]
                ends.append(f"{prefix}x{i}.{j}")
        return ends

    if first:
        dev_set("cur:", [])
    traj = []
    for b in range(batch):
        prev: list[str] = []
        for r in range(rounds):
            deps[f"t{b}.{r}"] = prev
            prev = [f"t{b}.{r}"]
        traj += prev
    for k in range(candidates):
        deps[f"a{k}"] = traj
        deps[f"o{k}"] = [f"a{k}"]
        dev_set(f"c{k}:", [f"o{k}"])
    done: set[str] = set()
    ticks = 0
    order = list(deps)
    while len(done) < len(deps):
        ready = [t for t in order if t not in done and all(d in done for d in deps[t])][:slots]
        done.update(ready)
        ticks += 1
    return ticks


def start_sim(slots: int, latency: float) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(ROOT / "bench" / "simserver.py"), "--port", "0", "--slots", str(slots),
                             "--latency-mean", str(latency), "--sigma", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True)
    ready, _, _ = select.select([proc.stdout], [], [], 30)
    line = proc.stdout.readline().decode() if ready else ""
    if not line.startswith("listening on "):
        proc.kill()
        raise RuntimeError(f"simserver did not start: {line!r}")
    return proc, line.split("listening on ", 1)[1].strip() + "/v1"


def run_section(*, steps: int = 3, candidates: int = 5, batch: int = 10, dev: int = 10, rounds: int = 1,
                concurrency: int = 64, latency: float = 0.5, seeds: Path | None = None, timeout: float = 600) -> dict:
    seeds = seeds or (SEEDS if SEEDS.exists() else EXAMPLES)
    proc, base_url = start_sim(concurrency, latency)
    out = Path(tempfile.mkdtemp(prefix="evolinstruct-optimize-bench-")) / "opt"
    cmd = [sys.executable, "-c", "from evolinstruct.cli import app; app()", "optimize", str(seeds), "-o", str(out),
           "--evol-base-url", base_url, "--evol-model", "sim", "--steps", str(steps), "--candidates", str(candidates),
           "--batch-size", str(batch), "--dev-size", str(dev), "--rounds", str(rounds), "--holdout", "0",
           "--concurrency", str(concurrency), "--max-tokens", "256"]
    try:
        started = time.perf_counter()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        wall = time.perf_counter() - started
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    if done.returncode != 0:
        raise RuntimeError(f"optimize failed (rc {done.returncode}): {done.stderr[-2000:]}")
    stats = json.loads((out / "stats.json").read_text())
    rows = []
    for s in stats["steps"]:
        ticks = ideal_ticks(first=s["step"] == 1, batch=batch, rounds=rounds, candidates=candidates, dev=dev,
                            slots=concurrency)
        ideal = ticks * latency
        rows.append({"step": s["step"], "calls": s["calls_sent"], "cache_hits": s["cache_hits"],
                     "seconds": s["seconds"], "ideal_ticks": ticks, "ideal_s": round(ideal, 2),
                     "frac_ideal": round(ideal / s["seconds"], 3) if s["seconds"] else None,
                     "accepted": s["accepted"]})
    return {"concurrency": concurrency, "latency": latency, "steps": steps, "candidates": candidates,
            "batch": batch, "dev": dev, "rounds": rounds, "seeds": seeds.name, "wall_s": round(wall, 2), "rows": rows,
            "ok": all((r["frac_ideal"] or 0) >= TARGET for r in rows), "target": TARGET}


def markdown(result: dict) -> str:
    lines = [f"C={result['concurrency']} (server slots and --concurrency), L={result['latency']} s constant, "
             f"{result['candidates']} candidates, batch {result['batch']}, dev {result['dev']}, rounds "
             f"{result['rounds']}; whole command {result['wall_s']} s.", "",
             "| step | calls sent | from the store | seconds | ideal ticks | ideal s | of ideal | accepted |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in result["rows"]:
        lines.append(f"| {r['step']} | {r['calls']} | {r['cache_hits']} | {r['seconds']} | {r['ideal_ticks']} | "
                     f"{r['ideal_s']} | {r['frac_ideal']} | {r['accepted']} |")
    return "\n".join(lines)



def md_section(result: dict) -> str:
    """docs/BENCHMARKS.md's optimize section: the setting and the step graph, the table, the target."""
    r = result
    c, lat, k, b, d, n = r["concurrency"], r["latency"], r["candidates"], r["batch"], r["dev"], r["rounds"]
    traj, last = b * n, k * d * 2
    ticks = sorted({row["ideal_ticks"] for row in r["rows"]})
    seeds = r.get("seeds", "alpaca_52k.json")
    return "\n".join([
        "`python bench/optimize_bench.py` (or `bench/run.py --sections optimize`): `evolinstruct optimize` through its "
        f"CLI against `bench/simserver.py` with C={c} server slots and `--concurrency {c}`, a constant latency of "
        f"{lat:g} s (`--sigma 0`), {k} candidates, a training minibatch of {b}, {d} dev instructions, {n} "
        f"round{'s' if n != 1 else ''}, {r['steps']} steps, on {'the Alpaca seeds' if 'alpaca' in seeds else seeds}. "
        f"A step's calls form a graph: the trajectory ({traj} evolutions) and, on step 1 only, the current method's "
        f"dev set ({d} evolutions, then {d} judge and {d} answer calls at once); then per candidate analysis → "
        f"optimization → its dev set ({d} evolutions, then {2 * d} calls). From step 2 the current method's dev "
        "metrics are already known (it was a candidate, or the current method, of the step before). The ideal is "
        f"{lat:g} s × the ticks of an as-soon-as-ready schedule of that graph on {c} slots "
        f"({' or '.join(str(t) for t in ticks)} per step: the last level, {last} judge and answer calls, takes "
        f"{-(-last // c)}); the target is at least {r['target']} of it.",
        "",
        "| step | calls sent | from the store | seconds | ideal ticks | ideal s | of ideal | accepted |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(f"| {x['step']} | {x['calls']} | {x['cache_hits']} | {x['seconds']} | {x['ideal_ticks']} | {x['ideal_s']} | "
          f"{x['frac_ideal']} | {x['accepted']} |" for x in r["rows"]),
        "",
        f"Every step at least {r['target']} of its ideal: {'met' if r['ok'] else '**not met**'}. Whole command "
        f"{r['wall_s']} s (with start-up). Calls per step: {traj} + {k} × (2 + {3 * d}), plus {3 * d} on step 1, as "
        "the structure says: the candidates and their dev items are in flight at once.",
    ])

def main() -> int:
    result = run_section()
    print(markdown(result))
    print(f"every step >= {TARGET} of its ideal: {'yes' if result['ok'] else 'NO'}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
