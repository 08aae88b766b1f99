#!/usr/bin/env python3
"""Throughput benchmark: evolinstruct vs distilabel 1.5.3 vs the WizardLM repo's sequential loop.

`python bench/run.py [--quick]` starts the latency-simulating server (bench/simserver.py) on
127.0.0.1, and measures, on the same Alpaca seeds and the same simulated server:

  (a) evolinstruct, through its CLI as a subprocess (`evolinstruct evolve ... --backend openai`);
  (b) distilabel's EvolInstruct at its default input_batch_size (50) and a larger one;
  (c) the repo's sequential loop, for a fixed time (its ideal is 1 / L requests per second).

For each: wall time, requests (from the server's /stats), req/s, fraction of the ideal C / L, client
CPU seconds (getrusage of the child and its descendants) and ms of CPU per request, peak RSS of the
child's process tree (polled from /proc), and the most requests the server saw in flight at once.
A run updates docs/BENCHMARKS.md (`--quick`, about 2 minutes, only prints, unless --write-docs; --no-docs never
writes): the page is a list of `## ` sections; the run replaces those of the sections it measured, each marked
"Measured on STAMP by `bench/run.py --sections X`", and keeps every other one as it is (the hand-written
redesign comparison, and the sections a partial run did not measure). The targets table keeps the rows
this run did not measure, marked with their run. `--from-json FILE` does the same from saved results.

Sections (`--sections`, a comma list; `all` is every one, what `make bench` runs): `throughput` (default),
`faults` (faults on, then resume with faults off, and check the accounting), `scale` (peak RSS on 5K vs 52K
seeds), `local` (the embedded engine's tokens/s batched vs unbatched), `adaptive` (adaptive vs uniform
operation weights on a server with per-operation elimination: kept evolutions per 1,000 calls, kept share per
operation), `batch` (`--batch openai` rounds, requests and cost against the online run, bench/batchbench.py),
`optimize` (`evolinstruct optimize` per step at C=64 against its ideal, bench/optimize_bench.py), `endpoints`,
`shards` and `ray_overhead` (scale-out: 1-4 endpoints, `--ray 2` shards, a Ray Serve replica;
bench/scale_bench.py). Each section's page text is rendered next to its code (`md_*`). Calls and tokens per
kept example are reported for every evolinstruct run (from its stats.json). Raw results go to bench/results/
(gitignored).

Everything runs on 127.0.0.1, with a timeout on every child; children run in their own process
group, which is what a timeout kills.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import re
import resource
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"
VENV_PY = ROOT / ".venv" / "bin" / "python"
EVOLINSTRUCT = ROOT / ".venv" / "bin" / "evolinstruct"
DIST_PY = BENCH / ".venv-distilabel" / "bin" / "python"
SEEDS = ROOT.parent / "shared" / "data" / "seeds" / "alpaca_52k.json"
RESULTS = BENCH / "results"
DOC = ROOT / "docs" / "BENCHMARKS.md"

if __name__ == "__main__":  # run under the project venv (rich, aiohttp) whatever python started us
    try:
        import rich  # noqa: F401
    except ImportError:
        if VENV_PY.exists() and Path(sys.prefix).resolve() != (ROOT / ".venv").resolve():
            os.execv(str(VENV_PY), [str(VENV_PY), *sys.argv])
        raise

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

console = Console(stderr=True, width=160)
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
TICK = os.sysconf("SC_CLK_TCK")


# ---------------------------------------------------------------------------------------- helpers
def http_json(url: str, method: str = "GET", timeout: float = 10.0) -> dict:
    req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def proc_cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime
    except (OSError, IndexError, ValueError):
        return 0.0


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid = int(Path(f"/proc/{d}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _status_kb(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return 0


class TreeMonitor(threading.Thread):
    """Polls a process tree: the peak of the summed RSS of all its processes, and the root's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak_tree_kb = 0
        self.root_hwm_kb = 0
        self.max_procs = 0
        self._halt = threading.Event()

    def sample(self) -> None:
        kids = _children_map()
        tree, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            tree.append(p)
            todo.extend(kids.get(p, ()))
        total = sum(_status_kb(p, "VmRSS:") for p in tree)
        self.peak_tree_kb = max(self.peak_tree_kb, total)
        self.root_hwm_kb = max(self.root_hwm_kb, _status_kb(self.pid, "VmHWM:"))
        self.max_procs = max(self.max_procs, len(tree))

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=5)


def run_child(cmd: list[str], *, timeout: float, log: Path, env: dict | None = None, cwd: Path = ROOT) -> dict:
    """Run one measured child in its own process group; kill that group on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out_path = log.with_suffix(".stdout")
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    full_env = {**os.environ, **(env or {})}
    with open(log, "wb") as err, open(out_path, "wb") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=full_env, cwd=cwd, start_new_session=True)
        mon = TreeMonitor(p.pid)
        mon.start()
        timed_out = False
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)  # the group this call started, nothing else
            try:
                rc = p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                rc = p.wait()
        wall = time.perf_counter() - t0
        mon.stop()
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    stdout = out_path.read_text(errors="replace")
    parsed = None
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            with contextlib.suppress(json.JSONDecodeError):
                parsed = json.loads(line)
                break
    return {
        "rc": rc, "timed_out": timed_out, "wall_s": wall,
        "cpu_user_s": ru1.ru_utime - ru0.ru_utime, "cpu_sys_s": ru1.ru_stime - ru0.ru_stime,
        "peak_rss_mb": max(mon.peak_tree_kb, mon.root_hwm_kb) / 1024, "procs": mon.max_procs,
        "json": parsed, "log": str(log),
    }


def tail(path: str | Path, n: int = 15) -> str:
    try:
        return "\n".join(Path(path).read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ---------------------------------------------------------------------------------------- sim server
class SimServer:
    """bench/simserver.py as a subprocess on 127.0.0.1 with a free port."""

    def __init__(self, slots: int, latency: float, sigma: float, extra: list[str] | None = None, log: Path | None = None):
        self.args = ["--slots", str(slots), "--latency-mean", str(latency), "--sigma", str(sigma), *(extra or [])]
        self.slots, self.latency, self.sigma = slots, latency, sigma
        self.log = log
        self.proc: subprocess.Popen | None = None

    def __enter__(self) -> SimServer:
        err = open(self.log, "wb") if self.log else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(VENV_PY), str(BENCH / "simserver.py"), "--host", "127.0.0.1", "--port", "0", *self.args],
            stdout=subprocess.PIPE, stderr=err, start_new_session=True,
        )
        ready, _, _ = select.select([self.proc.stdout], [], [], 30)
        line = self.proc.stdout.readline().decode() if ready else ""
        if not line.startswith("listening on "):
            self.__exit__()
            raise RuntimeError(f"sim server did not start: {line!r} {tail(self.log) if self.log else ''}")
        self.url = line.split("listening on ", 1)[1].strip()
        self.base_url = self.url + "/v1"
        return self

    def __exit__(self, *exc) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    @property
    def ideal(self) -> float:
        return self.slots / self.latency

    def stats(self) -> dict:
        return http_json(self.url + "/stats")

    def reset(self) -> None:
        http_json(self.url + "/stats/reset", method="POST")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.proc.pid) if self.proc else 0.0


def measured(sim: SimServer, label: str, tool: str, cmd: list[str], *, timeout: float, log: Path,
             ideal: float, env: dict | None = None, **info) -> dict:
    """Run one tool against the sim server with fresh server counters; return its result row."""
    sim.reset()
    cpu0 = sim.cpu_seconds()
    console.print(f"[bold]> {label}[/]: {' '.join(str(c) for c in cmd[:3])} ... (timeout {timeout:.0f}s)")
    r = run_child(cmd, timeout=timeout, log=log, env=env)
    st = sim.stats()
    requests = st["requests"]
    active = (st["last_done_at"] - st["first_request_at"]) if st["first_request_at"] and st["last_done_at"] else 0.0
    cpu = r["cpu_user_s"] + r["cpu_sys_s"]
    row = {
        "label": label, "tool": tool, "slots": sim.slots, "latency": sim.latency, "sigma": sim.sigma,
        "requests": requests, "completed": st["completed"], "by_kind": st["by_kind"],
        "wall_s": round(r["wall_s"], 2), "active_s": round(active, 2),
        "req_per_s": round(requests / r["wall_s"], 1) if r["wall_s"] else 0.0,
        "active_req_per_s": round(requests / active, 1) if active else 0.0,
        "ideal_req_per_s": ideal,
        "cpu_s": round(cpu, 2), "cpu_ms_per_req": round(1000 * cpu / requests, 2) if requests else None,
        "server_cpu_s": round(sim.cpu_seconds() - cpu0, 2),
        # mean busy slots over the active window / C: how full the client kept the server
        "slot_util": round(st["service_seconds"] / (active * sim.slots), 3) if active and sim.slots else None,
        "peak_rss_mb": round(r["peak_rss_mb"], 1), "procs": r["procs"],
        "max_in_flight": st["max_in_flight"], "max_in_service": st["max_in_service"],
        "rc": r["rc"], "timed_out": r["timed_out"], "log": r["log"], "child_json": r["json"], **info,
    }
    row["frac_ideal"] = round(row["req_per_s"] / ideal, 3) if ideal else None
    status = "[red]TIMEOUT[/]" if r["timed_out"] else ("[green]ok[/]" if r["rc"] == 0 else f"[red]rc={r['rc']}[/]")
    console.print(f"  {status} {requests} requests in {row['wall_s']}s = {row['req_per_s']} req/s "
                  f"({100 * (row['frac_ideal'] or 0):.0f}% of ideal {ideal:.0f}), cpu {row['cpu_s']}s, "
                  f"peak rss {row['peak_rss_mb']} MB, max in flight {row['max_in_flight']}")
    if r["rc"] != 0 or r["timed_out"]:
        console.print(f"[dim]{tail(r['log'])}[/]")
    return row


# ---------------------------------------------------------------------------------------- the tools
def evolinstruct_env(args) -> tuple[list[str], dict]:
    """The command prefix for `evolinstruct`: the working tree (default) or a git ref exported to a tmp dir."""
    if args.evolinstruct_ref:
        dest = Path(tempfile.mkdtemp(prefix="evolinstruct-ref-"))
        tar = subprocess.run(["git", "-C", str(ROOT), "archive", args.evolinstruct_ref, "src"], check=True, capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=tar, check=True)
        # The editable install is a static .pth path, so PYTHONPATH takes precedence over it.
        return [str(VENV_PY), "-m", "evolinstruct.cli"], {"PYTHONPATH": str(dest / "src")}
    return [str(EVOLINSTRUCT)], {}


def run_evolinstruct(args, sim: SimServer, *, seeds: int, epochs: int, concurrency: int, label: str,
                     extra: list[str] | None = None, out: Path | None = None, keep_out: bool = False,
                     profile: bool = False) -> dict:
    prefix, env = evolinstruct_env(args)
    tmp = out or Path(tempfile.mkdtemp(prefix="evolinstruct-bench-")) / "run"
    cmd = [*prefix, "evolve", str(args.seeds_file), "-o", str(tmp), "--backend", "openai",
           "--base-url", sim.base_url, "--model", "sim", "--concurrency", str(concurrency),
           "--max-tokens", str(args.max_tokens), "--epochs", str(epochs), "--limit", str(seeds),
           *args.evolinstruct_args, *(extra or [])]
    log = args.logs / f"{slug(label)}.log"
    prof = None
    if profile:
        pyspy = ROOT / ".venv" / "bin" / "py-spy"
        if pyspy.exists():
            prof = args.logs / f"{slug(label)}.pyspy.raw"
            cmd = [str(pyspy), "record", "-r", "100", "-f", "raw", "-o", str(prof), "--", *cmd]
        else:
            console.print("[yellow]py-spy not in .venv (pip install py-spy): not profiling[/]")
    row = measured(sim, label, "evolinstruct", cmd, timeout=args.timeout, log=log, ideal=sim.ideal, env=env,
                   seeds=seeds, epochs=epochs, concurrency=concurrency)
    row.update(per_kept(tmp / "stats.json"))
    row["evolutions_per_s"] = round(seeds * epochs / row["wall_s"], 1) if row["wall_s"] else 0.0
    answers = (row.get("by_kind") or {}).get("answer", 0)
    p_answer = min(1.0, max(0.0, (answers - seeds) / (seeds * epochs))) if answers else 1.0
    model = scheduler_model(seeds, epochs, p_answer, concurrency, sim.latency, sim.sigma, args.max_chains_model)
    row["model_req_per_s"] = round(model, 1)
    row["frac_model"] = round(row["req_per_s"] / model, 3) if model else None
    if prof and prof.exists():
        sys.path.insert(0, str(BENCH))
        from pyspy_top import summarise

        row["profile"] = summarise(str(prof), top=20)
        row["profile_raw"] = str(prof)
    if not keep_out and out is None:
        shutil.rmtree(tmp.parent, ignore_errors=True)
    return row


def scheduler_model(seeds: int, epochs: int, p_answer: float, slots: int, latency: float, sigma: float,
                    max_chains: int | None = None, trials: int = 3, seed: int = 0) -> float:
    """Expected req/s of evolinstruct's scheduler with zero client overhead (a discrete-event model).

    Each seed is a chain of dependent calls (1 answer, then per epoch evolve + judge + an answer with
    probability p_answer), each a lognormal service time. Up to `max_chains` chains are active (default
    4 * slots, evolinstruct's default --max-chains), seeds start in order as chains finish, and their
    calls share `slots` request slots, the chain with the most calls left first (evolinstruct's
    PrioritySlots). Requests / makespan, mean of `trials`.
    The gap between this and C / L is the workload's own tail (chains are sequential); the gap between
    the measured req/s and this is the client's overhead (CPU, start-up, scheduling delays).
    """
    import heapq
    import math
    import random
    from collections import deque

    mu = math.log(latency) - sigma**2 / 2
    max_chains = max_chains or 4 * slots
    rates = []
    for t in range(trials):
        rng = random.Random(seed + t)

        def new_chain(rng: random.Random = rng) -> deque:
            n = 1 + sum(2 + (rng.random() < p_answer) for _ in range(epochs))
            return deque(rng.lognormvariate(mu, sigma) for _ in range(n))

        chains: dict[int, deque] = {}
        queue: list[tuple[int, int, int]] = []  # (-calls left, arrival, chain): PrioritySlots' order
        order = 0
        running: list[tuple[float, int]] = []
        started = calls = 0
        now = 0.0

        def enqueue(cid: int, queue: list = queue, chains: dict = chains) -> None:
            nonlocal order
            heapq.heappush(queue, (-(len(chains[cid]) - 1), order, cid))
            order += 1

        while started < min(max_chains, seeds):
            chains[started] = new_chain()
            enqueue(started)
            started += 1
        free = slots
        while queue or running:
            while free and queue:
                _, _, cid = heapq.heappop(queue)
                heapq.heappush(running, (now + chains[cid].popleft(), cid))
                free -= 1
            now, cid = heapq.heappop(running)
            free += 1
            calls += 1
            if chains[cid]:
                enqueue(cid)
            else:
                del chains[cid]
                if started < seeds:
                    chains[started] = new_chain()
                    enqueue(started)
                    started += 1
        rates.append(calls / now)
    return sum(rates) / len(rates)


def per_kept(stats_path: Path) -> dict:
    """Calls and tokens per kept example, from the run's stats.json (the 'per kept' section)."""
    try:
        s = json.loads(stats_path.read_text())
    except (OSError, json.JSONDecodeError):
        return {"stats": None}
    kept = s.get("kept") or 0
    tokens = s.get("tokens", {})
    tok = (tokens.get("prompt", 0) or 0) + (tokens.get("completion", 0) or 0)
    ev = s.get("evolutions", {})
    return {
        "stats": {k: s.get(k) for k in ("seeds", "kept", "llm_calls", "cache_hits", "failed_calls", "seconds")},
        "evolutions": ev, "eliminated": s.get("eliminated"),
        "calls_per_kept": round(s["llm_calls"] / kept, 2) if kept else None,
        "tokens_per_kept": round(tok / kept, 1) if kept else None,
        "kept": kept, "llm_calls": s.get("llm_calls"),
    }


def run_distilabel(args, sim: SimServer, *, seeds: int, epochs: int, batch: int, label: str) -> dict:
    if not DIST_PY.exists():
        return {"label": label, "tool": "distilabel", "skipped": "bench/.venv-distilabel missing"}
    cmd = [str(DIST_PY), str(BENCH / "peers" / "distilabel_evol.py"), "--base-url", sim.base_url,
           "--stats-url", sim.url + "/stats", "--seeds-file", str(args.seeds_file), "--seeds", str(seeds),
           "--epochs", str(epochs), "--input-batch-size", str(batch), "--max-tokens", str(args.max_tokens)]
    row = measured(sim, label, "distilabel", cmd, timeout=args.timeout, log=args.logs / f"{slug(label)}.log",
                   ideal=sim.ideal, seeds=seeds, epochs=epochs, batch=batch)
    row["evolutions_per_s"] = round(seeds * epochs / row["wall_s"], 1) if row["wall_s"] else 0.0
    return row


def run_sequential(args, sim: SimServer, *, seconds: float, epochs: int, label: str) -> dict:
    cmd = [str(VENV_PY), str(BENCH / "peers" / "sequential.py"), "--base-url", sim.base_url,
           "--seeds-file", str(args.seeds_file), "--seeds", "100000", "--epochs", str(epochs),
           "--seconds", str(seconds), "--max-tokens", str(args.max_tokens)]
    row = measured(sim, label, "sequential", cmd, timeout=seconds + 120, log=args.logs / f"{slug(label)}.log",
                   ideal=1.0 / sim.latency, seconds_budget=seconds)
    # A fixed-time sample: measure the loop itself (its own clock), not the interpreter's start-up.
    if row.get("child_json"):
        row["req_per_s"] = row["child_json"]["req_per_s"]
        row["frac_ideal"] = round(row["req_per_s"] * sim.latency, 3)
        row["evolutions_per_s"] = round(row["child_json"]["requests"] / 2 / row["child_json"]["seconds"], 2)
    return row


def slug(s: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in s.lower()).strip("-")


# ---------------------------------------------------------------------------------------- sections
def section_throughput(args) -> list[dict]:
    rows: list[dict] = []
    q = args.quick
    seeds_a = 200 if q else args.seeds_a
    epochs = 1 if q else args.epochs
    batches = [50, 200] if q else [50, 500]
    # Config A: C=256, L=0.5, sigma=0.5: every tool.
    with SimServer(256, 0.5, 0.5, args.sim_extra, args.logs / "sim-a.log") as sim:
        tag = "C=256 L=0.5"
        if "evolinstruct" in args.tools:
            rows.append(run_evolinstruct(args, sim, seeds=seeds_a, epochs=epochs, concurrency=256,
                                         label=f"evolinstruct {tag}", profile=args.profile))
        if not args.no_distilabel:
            for b in batches:
                rows.append(run_distilabel(args, sim, seeds=seeds_a, epochs=epochs, batch=b,
                                           label=f"distilabel batch={b} {tag}"))
        if "sequential" in args.tools:
            rows.append(run_sequential(args, sim, seconds=5 if q else args.seq_seconds, epochs=epochs,
                                       label=f"sequential {tag}"))
    if q:
        return rows
    # Config B: C=1024, L=1.0: evolinstruct, and distilabel with a batch that can fill the slots.
    with SimServer(1024, 1.0, 0.5, args.sim_extra, args.logs / "sim-b.log") as sim:
        tag = "C=1024 L=1.0"
        if "evolinstruct" in args.tools:
            rows.append(run_evolinstruct(args, sim, seeds=args.seeds_b, epochs=epochs, concurrency=1024,
                                         label=f"evolinstruct {tag}", profile=args.profile))
        if not args.no_distilabel and args.dist_batch_b:
            rows.append(run_distilabel(args, sim, seeds=args.seeds_b, epochs=epochs, batch=args.dist_batch_b,
                                       label=f"distilabel batch={args.dist_batch_b} {tag}"))
    return rows


def section_faults(args) -> dict:
    """The fault load (the hardening issue's done-when): 5,000 seeds x 2 epochs at C=512 against a server
    answering 5% 429, 5% 500 and 2% dropped connections; then the same command again with faults off
    (resume). The final dataset.jsonl and eliminated.jsonl must be byte for byte those of a fault-free run
    of the same seeds (its own directory), every seed accounted, nothing left failed or unattempted."""
    seeds, epochs, concurrency = (50, 2, 128) if args.quick else (5000, 2, 512)
    work = Path(tempfile.mkdtemp(prefix="evolinstruct-faults-"))
    out, baseline_dir = work / "run", work / "baseline"
    faults = ["--rate-429", "0.05", "--rate-500", "0.05", "--rate-drop", "0.02", "--retry-after", "1"]
    result: dict = {"seeds": seeds, "epochs": epochs, "concurrency": concurrency, "faults": faults}
    keys = ("rc", "timed_out", "requests", "wall_s", "req_per_s", "evolutions", "stats")
    with SimServer(concurrency, 0.05, 0.5, args.sim_extra, args.logs / "sim-faults-baseline.log") as sim:
        row = run_evolinstruct(args, sim, seeds=seeds, epochs=epochs, concurrency=concurrency,
                               label="evolinstruct faults-baseline", out=baseline_dir, keep_out=True)
        result["baseline"] = {k: row.get(k) for k in keys}
    # Few retries while faults are on, so that some calls fail for good (a clean exit 3) and the resume has
    # work to do (--max-retries is operational: the resumed run uses the default).
    prefix, env = evolinstruct_env(args)
    helptext = subprocess.run([*prefix, "evolve", "--help"], capture_output=True, text=True, env={**os.environ, **env},
                              timeout=60).stdout
    on_extra = ["--max-retries", "1"] if "--max-retries" in helptext else []
    result["faults_on_flags"] = on_extra
    with SimServer(concurrency, 0.05, 0.5, [*args.sim_extra, *faults], args.logs / "sim-faults.log") as sim:
        row = run_evolinstruct(args, sim, seeds=seeds, epochs=epochs, concurrency=concurrency, extra=on_extra,
                               label="evolinstruct faults-on", out=out, keep_out=True)
        result["faults_on"] = {k: row.get(k) for k in keys}
        result["server_faults"] = sim.stats()["faults"]
    with SimServer(concurrency, 0.05, 0.5, args.sim_extra, args.logs / "sim-faults-off.log") as sim:
        row = run_evolinstruct(args, sim, seeds=seeds, epochs=epochs, concurrency=concurrency,
                               label="evolinstruct resume faults-off", out=out, keep_out=True)
        result["resume"] = {k: row.get(k) for k in keys}
    try:
        s = json.loads((out / "stats.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        result["ok"], result["why"] = False, f"no stats.json after resume: {exc}"
        return result

    def same(name: str) -> bool:
        a, b = out / name, baseline_dir / name
        return a.is_file() and b.is_file() and a.read_bytes() == b.read_bytes()

    ev = s["evolutions"]
    checks = {
        "baseline exit 0": (result["baseline"] or {}).get("rc") == 0,
        "faults-on exit 0 or 3": (result["faults_on"] or {}).get("rc") in (0, 3)
        and not (result["faults_on"] or {}).get("timed_out"),
        "resume exit 0": (result["resume"] or {}).get("rc") == 0,
        "all_seeds_accounted": s.get("seeds") == seeds and s.get("seeds_answered") == seeds,
        "planned == seeds*epochs": ev["planned"] == seeds * epochs,
        "not_attempted == 0": ev["not_attempted"] == 0,
        "errors == 0": ev["errors"] == 0,
        "attempted == kept+eliminated+errors": ev["attempted"] == ev["kept"] + ev["eliminated"] + ev["errors"],
        "resume sent no stored call again": (s.get("llm_calls") or 0) + (s.get("cache_hits") or 0)
        == (s.get("stored_calls") or (s.get("llm_calls") or 0) + (s.get("cache_hits") or 0)),
        "dataset.jsonl == fault-free run's": same("dataset.jsonl"),
        "eliminated.jsonl == fault-free run's": same("eliminated.jsonl"),
    }
    result["dataset_rows"] = s.get("dataset_rows")
    result["resume_sent"] = s.get("llm_calls")
    result["faults_on_errors"] = ((result.get("faults_on") or {}).get("evolutions") or {}).get("errors")
    result.update(checks=checks, ok=all(checks.values()), final_evolutions=ev)
    console.print(f"faults: {'[green]PASS[/]' if result['ok'] else '[red]FAIL[/]'} {checks}")
    if result["ok"]:
        shutil.rmtree(work, ignore_errors=True)
    else:
        console.print(f"[yellow]kept for inspection: {work}[/]")
    return result



def md_faults(f: dict) -> str:
    """docs/BENCHMARKS.md's fault test section."""
    on, rs = f.get("faults_on") or {}, f.get("resume") or {}
    base = f.get("baseline")
    lines = [f"{f['seeds']} seeds x {f['epochs']} epochs, C={f.get('concurrency', 128)}, L={f.get('latency', 0.05)} s, "
             f"server flags `{' '.join(f['faults'])}`; then the same command again against a server without faults "
             "(resume).", ""]
    if base:
        lines.append(f"- baseline without faults: {base.get('requests')} requests in {base.get('wall_s')} s")
    if f.get("faults_on_flags"):
        lines.append(f"- the faults-on run uses `{' '.join(f['faults_on_flags'])}` so that some calls fail for good "
                     "and the resume has work to do")
    lines += [f"- faults on: exit {on.get('rc')}, {on.get('requests')} requests in {on.get('wall_s')} s, "
              f"server faults {f.get('server_faults')}, evolutions {on.get('evolutions')}",
              f"- resume: exit {rs.get('rc')}, {rs.get('requests')} requests in {rs.get('wall_s')} s, "
              f"{(rs.get('stats') or {}).get('llm_calls')} calls sent, {(rs.get('stats') or {}).get('cache_hits')} cache hits",
              f"- checks: {'PASS' if f.get('ok') else 'FAIL'} " + ", ".join(f"{k}: {v}" for k, v in (f.get('checks') or {}).items())]
    if f.get("why"):
        lines.append(f"- {f['why']}")
    return "\n".join(lines)

ADAPTIVE_ELIM = "add_constraints=0.9,concretizing=0.9"  # as a small model fails them (issue 17's demo run)


def section_adaptive(args) -> dict:
    """Adaptive vs uniform operation weights (issue 17) on the simulation server with per-operation elimination
    (`--op-elim`: add_constraints and concretizing copy the given prompt 90% of the time, judged Equal; every
    judgement 5% Equal besides): kept evolutions per 1,000 calls (target: adaptive >= 1.15x uniform), the
    per-operation share of the kept data, and the adaptive weights (none below the floor)."""
    seeds, epochs, concurrency, pilot = (200, 4, 128, 20) if args.quick else (1000, 4, 256, 100)
    work = Path(tempfile.mkdtemp(prefix="evolinstruct-adaptive-"))
    result: dict = {"seeds": seeds, "epochs": epochs, "concurrency": concurrency, "pilot": pilot,
                    "op_elim": ADAPTIVE_ELIM, "latency": 0.02, "rate_equal": 0.05, "runs": {}}
    sim_flags = [*args.sim_extra, "--op-elim", ADAPTIVE_ELIM, "--rate-equal", str(result["rate_equal"])]
    for name, extra in (("uniform", []), ("adaptive", ["--op-weights", "adaptive", "--pilot", str(pilot)])):
        with SimServer(concurrency, result["latency"], 0.5, sim_flags, args.logs / f"sim-adaptive-{name}.log") as sim:
            row = run_evolinstruct(args, sim, seeds=seeds, epochs=epochs, concurrency=concurrency, extra=extra,
                                   label=f"evolinstruct {name} weights", out=work / name, keep_out=True)
        stats = json.loads((work / name / "stats.json").read_text())
        kept = stats["kept"]
        by_op = stats["by_op"]
        result["runs"][name] = {
            "rc": row["rc"], "wall_s": row["wall_s"], "calls": stats["llm_calls"], "kept": kept,
            "kept_per_1000_calls": round(1000 * kept / stats["llm_calls"], 1) if stats["llm_calls"] else 0.0,
            "kept_share": {op: round(c.get("kept", 0) / kept, 4) if kept else 0.0 for op, c in by_op.items()},
            "survival": {op: round(c.get("kept", 0) / c["attempted"], 3) if c.get("attempted") else None
                         for op, c in by_op.items()},
            "op_weights": stats.get("op_weights"),
        }
    uni, ada = result["runs"]["uniform"], result["runs"]["adaptive"]
    result["ratio"] = round(ada["kept_per_1000_calls"] / uni["kept_per_1000_calls"], 3) if uni["kept_per_1000_calls"] else None
    weights = (ada["op_weights"] or {}).get("adaptive") or {}
    floor = (ada["op_weights"] or {}).get("floor", 0)
    checks = {
        "both runs exit 0": uni["rc"] == 0 and ada["rc"] == 0,
        "adaptive >= 1.15x uniform kept per 1,000 calls": (result["ratio"] or 0) >= 1.15,
        "no operation's weight below the floor": bool(weights) and min(weights.values()) >= floor,
        "every operation in the adaptive kept data": set(ada["kept_share"]) == set(uni["kept_share"])
        and min(ada["kept_share"].values()) > 0,
    }
    result.update(checks=checks, ok=all(checks.values()))
    console.print(f"adaptive: x{result['ratio']} kept per 1,000 calls ({uni['kept_per_1000_calls']} uniform, "
                  f"{ada['kept_per_1000_calls']} adaptive); weights {weights}; "
                  f"{'[green]PASS[/]' if result['ok'] else '[red]FAIL[/]'} {checks}")
    shutil.rmtree(work, ignore_errors=True)
    return result



def md_adaptive(result: dict) -> str:
    """docs/BENCHMARKS.md's adaptive section: kept per 1,000 calls, uniform vs adaptive, and per operation."""
    r = result
    uni, ada = r["runs"]["uniform"], r["runs"]["adaptive"]
    ow = ada.get("op_weights") or {}
    weights, floor = ow.get("adaptive") or {}, ow.get("floor", 0.05)
    failing = [x.split("=")[0] for x in r["op_elim"].split(",")]
    lines = [f"{r['seeds']:,} Alpaca seeds x {r['epochs']} epochs at C={r['concurrency']} against `bench/simserver.py "
             f"--op-elim {r['op_elim']} --rate-equal {r.get('rate_equal', 0.05):g} --latency-mean {r.get('latency', 0.02):g}` "
             f"({' and '.join(failing)} copy the given prompt 90% of the time and are judged Equal, as a small model "
             f"fails them; every judgement is {r.get('rate_equal', 0.05):.0%} Equal besides). Uniform weights vs "
             f"`--op-weights adaptive --pilot {r['pilot']}` (floor {floor:g}):", "",
             "| run | calls | kept evolutions | kept per 1,000 calls |", "| --- | ---: | ---: | ---: |",
             f"| uniform | {uni['calls']:,} | {uni['kept']:,} | {uni['kept_per_1000_calls']} |",
             f"| adaptive (pilot {r['pilot']}) | {ada['calls']:,} | {ada['kept']:,} | {ada['kept_per_1000_calls']} |",
             f"| adaptive / uniform | | | **x{r['ratio']}** (target >= 1.15: "
             f"{'met' if (r['ratio'] or 0) >= 1.15 else '**not met**'}) |", "",
             "Per operation (the adaptive run's weights after the pilot; kept share = the operation's share of the kept "
             "evolutions):", "",
             "| operation | survival (uniform) | weight after the pilot | kept share, uniform | kept share, adaptive |",
             "| --- | ---: | ---: | ---: | ---: |"]

    def pct(v) -> str:
        return "-" if v is None else f"{v:.1%}"

    ops = sorted(set(uni["kept_share"]) | set(ada["kept_share"]) | set(weights), key=lambda o: (weights.get(o, 1), o))
    for op in ops:
        w = weights.get(op)
        wtxt = "-" if w is None else f"{w:.3f}{' (floor)' if w <= floor + 1e-9 else ''}"
        lines.append(f"| {op} | {pct(uni['survival'].get(op))} | {wtxt} | {pct(uni['kept_share'].get(op))} | "
                     f"{pct(ada['kept_share'].get(op))} |")
    lines.append("")
    checks = r.get("checks") or {}
    lines.append("Checks: " + ", ".join(f"{k}: {'yes' if v else '**no**'}" for k, v in checks.items()) + ".")
    after = ow.get("survival_after") or {}
    total = sum((c or {}).get("attempted", 0) for c in after.values())
    drawn = [(op, (after.get(op) or {}).get("attempted", 0)) for op in failing if op in after]
    if total and drawn:
        lines[-1] += (f" The failing operations were drawn {' and '.join(f'{n / total:.1%}' for _, n in drawn)} of the "
                      f"time after the pilot ({' and '.join(f'{n:,}' for _, n in drawn)} of {total:,} evolutions; the "
                      f"floor is {floor:.0%}).")
    return "\n".join(lines)

def section_scale(args) -> dict:
    """Peak RSS at 5K vs 52K seeds (1 epoch, fast server). Long: ~4 calls per seed."""
    result = {}
    sizes = [500, 2000] if args.quick else [5000, 52002]
    with SimServer(1024, 0.02, 0.5, args.sim_extra, args.logs / "sim-scale.log") as sim:
        for n in sizes:
            row = run_evolinstruct(args, sim, seeds=n, epochs=1, concurrency=1024, label=f"evolinstruct scale {n}")
            result[str(n)] = {k: row.get(k) for k in ("rc", "timed_out", "requests", "wall_s", "req_per_s", "peak_rss_mb", "cpu_ms_per_req")}
    return result



def md_scale(scale: dict) -> str:
    """docs/BENCHMARKS.md's scale (peak RSS) section."""
    lines = ["1 epoch, C=1024, L=0.02 s: the client is the bottleneck here, so req/s is evolinstruct's own ceiling on "
             "this machine.", "",
             "| seeds | requests | wall s | req/s | CPU ms/req | peak RSS MB | exit |",
             "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for n, r in scale.items():
        lines.append(f"| {n} | {r.get('requests')} | {r.get('wall_s')} | {r.get('req_per_s')} | {r.get('cpu_ms_per_req')} | "
                     f"{r.get('peak_rss_mb')} | {'timeout' if r.get('timed_out') else r.get('rc')} |")
    return "\n".join(lines)

LOCAL_SCRIPT = r"""
import asyncio, json, sys, time
from evolinstruct.models.base import Request, Sampling
from evolinstruct.models.local import LocalBackend
n, max_batch, max_tokens = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
b = LocalBackend(model="embedded", max_batch=max_batch)
reqs = [Request([{"role": "user", "content": f"Write a short story about the number {i}."}],
                Sampling(temperature=1.0, top_p=0.9, max_tokens=max_tokens, seed=i)) for i in range(n)]
async def main():
    t0 = time.perf_counter()
    res = await asyncio.gather(*(b.generate([r]) for r in reqs))
    dt = time.perf_counter() - t0
    toks = sum(r[0].completion_tokens for r in res)
    await b.aclose()
    print(json.dumps({"requests": n, "max_batch": max_batch, "completion_tokens": toks, "seconds": round(dt, 2),
                      "tokens_per_s": round(toks / dt, 1), "errors": sum(1 for r in res if r[0].error)}))
asyncio.run(main())
"""


def section_local(args) -> dict:
    """The embedded engine (SmolLM2-135M, in-process): completion tokens/s unbatched vs batched."""
    n, max_tokens = (8, 32) if args.quick else (32, 64)
    out = {}
    for mb in (1, 16):
        r = run_child([str(VENV_PY), "-c", LOCAL_SCRIPT, str(n), str(mb), str(max_tokens)], timeout=args.timeout,
                      log=args.logs / f"local-batch{mb}.log")
        out[f"max_batch={mb}"] = r["json"] or {"rc": r["rc"], "timed_out": r["timed_out"], "log_tail": tail(r["log"], 5)}
        console.print(f"local max_batch={mb}: {out[f'max_batch={mb}']}")
    return out



def md_local(local: dict) -> str:
    """docs/BENCHMARKS.md's local engine section."""
    lines = ["| setting | requests | completion tokens | seconds | tokens/s |", "| --- | ---: | ---: | ---: | ---: |"]
    for k, r in local.items():
        lines.append(f"| {k} | {r.get('requests', '-')} | {r.get('completion_tokens', '-')} | {r.get('seconds', '-')} | "
                     f"{r.get('tokens_per_s', r.get('log_tail', '-'))} |")
    return "\n".join(lines)

def section_optimize(args) -> dict:
    """`evolinstruct optimize` at C=64: calls and seconds per step against its dependency structure's ideal
    (bench/optimize_bench.py, issue 15)."""
    sys.path.insert(0, str(BENCH))
    from optimize_bench import markdown, run_section

    result = run_section(steps=2 if args.quick else 3, seeds=args.seeds_file, timeout=args.timeout)
    console.print(markdown(result), highlight=False)
    console.print(f"every step >= {result['target']} of its ideal: {'yes' if result['ok'] else 'NO'}")
    return result


# ---------------------------------------------------------------------------------------- reporting
def machine_info() -> dict:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_kb = _status_like("/proc/meminfo", "MemTotal:")
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "ram_gib": round(mem_kb / 1024 / 1024, 1), "kernel": platform.release()}


def _status_like(path: str, key: str) -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    return 0


def versions(args) -> dict:
    import importlib.metadata as md

    v = {"python": platform.python_version()}
    for pkg in ("evolinstruct", "openai", "aiohttp", "httpx"):
        with contextlib.suppress(md.PackageNotFoundError):
            v[pkg] = md.version(pkg)
    if DIST_PY.exists():
        r = subprocess.run([str(DIST_PY), "-c", "import importlib.metadata as m;print(m.version('distilabel'), m.version('openai'))"],
                           capture_output=True, text=True, timeout=60)
        if r.returncode == 0:
            d, o = r.stdout.split()
            v["distilabel"] = d
            v["openai (distilabel venv)"] = o
    git = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "src"], capture_output=True, text=True)
    v["evolinstruct source"] = (f"git {args.evolinstruct_ref}" if args.evolinstruct_ref
                                else f"working tree at {git.stdout.strip()}{' + uncommitted src changes' if dirty.stdout.strip() else ''}")
    return v


COLUMNS = [("run", "label"), ("requests", "requests"), ("wall s", "wall_s"), ("req/s", "req_per_s"),
           ("active req/s", "active_req_per_s"), ("ideal", "ideal_req_per_s"), ("% ideal", "frac_ideal"),
           ("evol/s", "evolutions_per_s"), ("client CPU s", "cpu_s"), ("CPU ms/req", "cpu_ms_per_req"),
           ("peak RSS MB", "peak_rss_mb"), ("max in flight", "max_in_flight"), ("slot util", "slot_util"),
           ("model req/s", "model_req_per_s"), ("% model", "frac_model")]


def fmt(key: str, v) -> str:
    if v is None:
        return "-"
    if key in ("frac_ideal", "frac_model", "slot_util"):
        return f"{100 * v:.0f}%"
    if key == "ideal_req_per_s":
        return f"{v:g}"
    return str(v)


def row_note(r: dict) -> str:
    if r.get("skipped"):
        return f"skipped: {r['skipped']}"
    notes = []
    if r.get("timed_out"):
        notes.append("TIMED OUT")
    elif r.get("rc"):
        notes.append(f"exit {r['rc']}")
    if r["tool"] == "evolinstruct":
        notes.append(f"{r['seeds']} seeds x {r['epochs']} epochs, --concurrency {r['concurrency']}")
        if r.get("calls_per_kept"):
            notes.append(f"{r['calls_per_kept']} calls and {r['tokens_per_kept']:.0f} tokens per kept")
    elif r["tool"] == "distilabel":
        notes.append(f"{r['seeds']} seeds x {r['epochs']} epochs, input_batch_size {r['batch']}")
    else:
        notes.append(f"stopped after {r['seconds_budget']:g}s")
    return "; ".join(notes)


def print_table(rows: list[dict]) -> None:
    t = Table(title="throughput on the simulated server (127.0.0.1)", title_justify="left")
    for name, _ in COLUMNS:
        t.add_column(name, justify="left" if name == "run" else "right")
    t.add_column("notes")
    for r in rows:
        if r.get("skipped"):
            t.add_row(r["label"], *["-"] * (len(COLUMNS) - 1), row_note(r))
            continue
        t.add_row(*[fmt(k, r.get(k)) for _, k in COLUMNS], row_note(r))
    Console(width=250).print(t)


def side_by_side(rows: list[dict], tag: tuple[int, float]) -> tuple[dict | None, dict | None, dict | None, dict | None]:
    """(evolinstruct, distilabel best, distilabel default batch 50, sequential): the finished runs at one (C, L)."""
    same = [r for r in rows if not r.get("skipped") and (r["slots"], r["latency"]) == tag and not r.get("rc") and not r.get("timed_out")]
    ev = next((r for r in same if r["tool"] == "evolinstruct"), None)
    dist = [r for r in same if r["tool"] == "distilabel"]
    best = max(dist, key=lambda r: r["req_per_s"]) if dist else None
    default = next((r for r in dist if r["batch"] == 50), None)
    seq = next((r for r in same if r["tool"] == "sequential"), None)
    return ev, best, default, seq


def ratios(rows: list[dict]) -> list[str]:
    out = []
    for tag in sorted({(r["slots"], r["latency"]) for r in rows if not r.get("skipped")}):
        ev, best, default, seq = side_by_side(rows, tag)
        if not ev:
            continue
        head = f"C={tag[0]}, L={tag[1]}"
        if best:
            out.append(f"{head}: evolinstruct / distilabel best (batch {best['batch']}) = "
                       f"{ev['req_per_s'] / best['req_per_s']:.2f}x req/s, {ev['evolutions_per_s'] / best['evolutions_per_s']:.2f}x evolutions/s")
            if default and default is not best:
                out.append(f"{head}: evolinstruct / distilabel default (batch 50) = "
                           f"{ev['req_per_s'] / default['req_per_s']:.2f}x req/s, {ev['evolutions_per_s'] / default['evolutions_per_s']:.2f}x evolutions/s")
        if seq and seq["req_per_s"]:
            out.append(f"{head}: evolinstruct / sequential loop = {ev['req_per_s'] / seq['req_per_s']:.0f}x req/s")
    return out


def targets(report: dict) -> list[tuple[str, str, bool]]:
    """The done-when criteria of every section this report measured: (criterion, this run's number, met)."""
    report = {k: v for k, v in report.items() if k not in ALL_SECTIONS or k in ran_sections(report)}
    rows = report.get("throughput", [])
    out: list[tuple[str, str, bool]] = []

    def line(what: str, value: str, ok: bool) -> None:
        out.append((what, value, bool(ok)))

    for slots, latency, goal in ((256, 0.5, 0.90), (1024, 1.0, 0.80)):
        ev = side_by_side(rows, (slots, latency))[0]
        if ev:
            model = ev.get("model_req_per_s")
            ceiling = f"; zero-overhead model of this workload: {model / ev['ideal_req_per_s']:.1%}" if model else ""
            line(f"C={slots}, L={latency}: at least {goal:.0%} of ideal", f"{ev['frac_ideal']:.1%}{ceiling}",
                 ev["frac_ideal"] >= goal)
    ev, best, default, _ = side_by_side(rows, (256, 0.5))
    if ev and best:
        line("at least 2.5x distilabel's best (C=256)", f"{ev['req_per_s'] / best['req_per_s']:.2f}x (batch {best['batch']})",
             ev["req_per_s"] / best["req_per_s"] >= 2.5)
    if ev and default:
        line("at least 8x distilabel's default (C=256)", f"{ev['req_per_s'] / default['req_per_s']:.2f}x",
             ev["req_per_s"] / default["req_per_s"] >= 8)
    scale = report.get("scale") or {}
    if "5000" in scale and "52002" in scale and scale["5000"].get("peak_rss_mb") and scale["52002"].get("peak_rss_mb"):
        growth = scale["52002"]["peak_rss_mb"] / scale["5000"]["peak_rss_mb"]
        line("peak RSS grows at most 1.5x from 5K to 52K seeds", f"{growth:.2f}x", growth <= 1.5)
    local = report.get("local") or {}
    one, sixteen = (local.get("max_batch=1") or {}).get("tokens_per_s"), (local.get("max_batch=16") or {}).get("tokens_per_s")
    if one and sixteen:
        line("batched local engine at least 3x unbatched (16 concurrent)", f"{sixteen / one:.2f}x", sixteen / one >= 3)
    if report.get("faults"):
        line("faults: every seed accounted for; a resume with faults off completes", "see Fault test",
             bool(report["faults"].get("ok")))
    if (a := report.get("adaptive")) and a.get("ratio") is not None:
        line("adaptive weights: at least 1.15x uniform's kept per 1,000 calls", f"x{a['ratio']}", a["ratio"] >= 1.15)
    if b := report.get("batch"):
        line("--batch: at most 0.6x the online cost, same dataset",
             f"x{b['cost_ratio']:.3f}, same dataset: {'yes' if b['same_dataset'] else 'no'}",
             b["cost_ratio"] <= 0.6 and b["same_dataset"])
    if (o := report.get("optimize")) and o.get("rows"):
        line(f"optimize: every step at least {o['target']} of its ideal",
             f"{min(r['frac_ideal'] or 0 for r in o['rows'])} (the lowest step)", o["ok"])
    if (e := report.get("endpoints")) and e.get("frac_linear_at_4") is not None:
        line("4 endpoints: at least 0.9 of linear", f"{e['frac_linear_at_4']:.3f}", e.get("target_met"))
    if (sh := report.get("shards")) and sh.get("ratio_wall") is not None:
        line("--ray 2 at least 1.5x one process (wall, client-bound)",
             f"{sh['ratio_wall']:.2f}x (shard phase {sh.get('ratio_shard_phase')}x)", sh.get("target_met"))
    if (ro := report.get("ray_overhead")) and "ratio" in ro:
        line("a Ray Serve replica at least 0.85x in-process tokens/s", f"{ro['ratio']}", ro.get("target_met"))
    return out


def md_table(rows: list[dict]) -> str:
    head = "| " + " | ".join(n for n, _ in COLUMNS) + " | notes |"
    sep = "|" + "|".join(" --- " if n == "run" else " ---: " for n, _ in COLUMNS) + "| --- |"
    lines = [head, sep]
    for r in rows:
        if r.get("skipped"):
            lines.append("| " + r["label"] + " |" + " - |" * (len(COLUMNS) - 1) + f" {row_note(r)} |")
        else:
            lines.append("| " + " | ".join(fmt(k, r.get(k)) for _, k in COLUMNS) + f" | {row_note(r)} |")
    return "\n".join(lines)


def md_setup(report: dict) -> str:
    """The throughput section's setting: machine, versions, server, seeds, what each column means."""
    m, v = report["machine"], report["versions"]
    return "\n".join([
        f"- Machine: {m['nproc']} CPUs ({m['cpu'] or 'unknown CPU'}), {m['ram_gib']} GiB RAM, Linux {m['kernel']}. "
        "The simulated server, the client under test and the benchmark driver share these cores.",
        "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()) + ".",
        "- Server: `bench/simserver.py`, an OpenAI-compatible chat endpoint on 127.0.0.1 with C slots (at most C requests "
        "in service, the rest queue) and lognormal service time with mean L and sigma 0.5, drawn from a hash of the "
        "request body. Ideal throughput is C / L requests/s (1 / L for the sequential loop). "
        f"Extra server flags: `{' '.join(report['sim_extra']) or 'none'}`.",
        f"- Seeds: the first N of Alpaca 52K; {report['epochs']} epochs; max tokens {report['max_tokens']}.",
        "- Calls per seed differ by design: evolinstruct makes 1 seed answer + per epoch 1 evolve, 1 equality judge and "
        "1 answer (the answer is skipped when the judge eliminates); distilabel's EvolInstruct makes per epoch 1 evolve "
        "(a barrier over each input batch) and then 1 answer per evolution, no judge; the sequential loop makes 1 evolve "
        "and 1 answer per epoch. So compare req/s (the server's work done per second) and evol/s (seed-epochs per second).",
        "- Columns: *wall s* is the tool's process from start to exit (startup included); *req/s* = requests / wall; "
        "*active req/s* = requests over the server's window from the first request to the last response; *client CPU s* "
        "is user+sys of the tool's process tree (getrusage); *peak RSS* is the peak of the summed RSS of the tree "
        "(polled from /proc every 0.25 s); *max in flight* is the most requests the server held at once; *slot util* is "
        "the mean number of busy slots over the active window divided by C (for the sequential loop, by 1 would be "
        "its own ideal); *model req/s* is what evolinstruct's scheduler would reach with zero client overhead on the "
        "same workload (a discrete-event model: each seed is a chain of dependent calls, up to 4 x C chains active, "
        "C request slots, the same latency distribution; `scheduler_model()`), so the gap from the ideal to the "
        "model is the workload's own tail and the gap from the model to req/s is client overhead; *% model* is "
        "req/s over it.",
    ])


def md_profiles(profiles: dict) -> str | None:
    lines: list[str] = []
    for label, prof in (profiles or {}).items():
        lines += [f"{label}, {prof['samples']} samples, top frames by self time:", "", "```"]
        lines += [f"{pct:5.1f}%  {name}" for name, pct in prof["self"][:15]] + ["```", ""]
    return "\n".join(lines).strip() or None


# ---------------------------------------------------------------------------------------- docs/BENCHMARKS.md
# docs/BENCHMARKS.md is a list of `## ` sections. A run replaces the sections of the bench sections it ran (and
# removes those it ran that came out empty, e.g. py-spy without --profile); every other section stays as it is in
# the file: the hand-written ones (the redesign comparison) and those of sections this run did not measure. Each
# generated section starts with a line saying which run measured it. The order below is where a new section goes.
TARGETS_HEADING = "## Against the targets"
DOC_SECTIONS: list[tuple[str, str]] = [  # (heading, the bench section that produces it)
    ("## Setup", "throughput"),
    ("## Throughput", "throughput"),
    ("## Ratios", "throughput"),
    (TARGETS_HEADING, "*"),
    ("## Where evolinstruct spends its CPU (py-spy)", "throughput"),
    ("## Fault test", "faults"),
    ("## Scale (peak RSS)", "scale"),
    ("## Local engine (embedded SmolLM2-135M, in-process)", "local"),
    ("## The redesign (issue 11), before and after", ""),  # hand-written: never generated
    ("## Adaptive operation weights (issue 17)", "adaptive"),
    ("## Provider batch rounds (issue 14)", "batch"),
    ("## `evolinstruct optimize` per step (issue 15)", "optimize"),
    ("## Scale-out (issue 13): endpoints, shards, Ray overhead", ""),  # the former hand-written form of the next three
    ("## Scale-out (issue 13): endpoint scaling", "endpoints"),
    ("## Scale-out (issue 13): shard scaling", "shards"),
    ("## Scale-out (issue 13): Ray overhead", "ray_overhead"),
]
LEGACY = {"## Scale-out (issue 13): endpoints, shards, Ray overhead": {"endpoints", "shards", "ray_overhead"}}
MEASURED = re.compile(r"^Measured on (\S+) by `([^`]*)`")
ALL_SECTIONS = ("throughput", "faults", "scale", "local", "adaptive", "batch", "optimize", "endpoints", "shards",
                "ray_overhead")
TARGETS_NOTE = ("The model column is the ceiling of the workload itself: each seed is a chain of about 13 dependent "
                "calls, so near the end fewer chains than slots are left and the slots drain on lognormal stragglers. "
                "At C=256 with 500 seeds that ceiling is about 90-91% of C/L before any client cost, so 90% measured "
                "would leave the process start, the client and the server (which share 2 cores) about 1% in all. "
                "Running the seed's answer or the judge and the answer in parallel does not lift the ceiling above "
                "91.4% (`bench/schedule_variants.py`).")


def ran_sections(report: dict) -> list[str]:
    """The bench sections this report measured (saved results before `sections` was recorded: the keys present);
    a section that failed (an exception: {"error": ...}) did not, so the page keeps its earlier text."""
    ran = report["sections"] if report.get("sections") else [s for s in ALL_SECTIONS if report.get(s)]
    failed = {s for s in ALL_SECTIONS if isinstance(report.get(s), dict) and report[s].get("error")}
    if report.get("throughput_error"):
        failed.add("throughput")
    return [s for s in ALL_SECTIONS if s in ran and s not in failed]


def run_command(report: dict) -> str:
    ran = report.get("sections") or ran_sections(report)
    which = "all" if set(ran) == set(ALL_SECTIONS) else ",".join(ran)
    return f"python bench/run.py{' --quick' if report.get('quick') else ''} --sections {which}"


def measured_line(report: dict) -> str:
    load = report.get("loadavg")
    return (f"Measured on {report['date']} by `{run_command(report)}`"
            + (f" ({report['machine']['nproc']} CPUs, load average {load[0]:.1f} when it started)." if load else "."))


def generated_sections(report: dict) -> dict[str, str | None]:
    """heading -> body (None: the section ran and has nothing to show) for every section this run produced,
    the targets table excepted (merged with the file's in write_doc)."""
    sys.path.insert(0, str(BENCH))
    ran = set(ran_sections(report))
    out: dict[str, str | None] = {}
    if "throughput" in ran:
        rows = report.get("throughput") or []
        out["## Setup"] = md_setup(report)
        out["## Throughput"] = md_table(rows)
        rs = ratios(rows)
        out["## Ratios"] = "\n".join(f"- {x}" for x in rs) if rs else None
        out["## Where evolinstruct spends its CPU (py-spy)"] = md_profiles(report.get("profiles") or {})
    if "faults" in ran and report.get("faults"):
        out["## Fault test"] = md_faults(report["faults"])
    if "scale" in ran and report.get("scale"):
        out["## Scale (peak RSS)"] = md_scale(report["scale"])
    if "local" in ran and report.get("local"):
        out["## Local engine (embedded SmolLM2-135M, in-process)"] = md_local(report["local"])
    if "adaptive" in ran and report.get("adaptive"):
        out["## Adaptive operation weights (issue 17)"] = md_adaptive(report["adaptive"])
    if "batch" in ran and report.get("batch"):
        from batchbench import md_section as batch_md

        out["## Provider batch rounds (issue 14)"] = batch_md(report["batch"])
    if "optimize" in ran and report.get("optimize"):
        from optimize_bench import md_section as optimize_md

        out["## `evolinstruct optimize` per step (issue 15)"] = optimize_md(report["optimize"])
    import scale_bench

    for name, heading in (("endpoints", "## Scale-out (issue 13): endpoint scaling"),
                          ("shards", "## Scale-out (issue 13): shard scaling"),
                          ("ray_overhead", "## Scale-out (issue 13): Ray overhead")):
        if name in ran and report.get(name):
            out[heading] = getattr(scale_bench, f"md_{name}")(report[name], report)
    return out


def split_doc(text: str) -> tuple[list[str], list[list]]:
    """(the lines before the first `## ` heading, [[heading, body lines], ...]); headings inside ``` are text."""
    head: list[str] = []
    blocks: list[list] = []
    fence = False
    for line in text.splitlines():
        if line.startswith("```"):
            fence = not fence
        if line.startswith("## ") and not fence:
            blocks.append([line.rstrip(), []])
        elif blocks:
            blocks[-1][1].append(line)
        else:
            head.append(line)
    return head, [[h, "\n".join(b).strip("\n")] for h, b in blocks]


def _merge_targets(report: dict, old: str | None, old_stamp: str | None) -> str | None:
    """The targets table: this run's rows, then (unless every section ran) the file's rows this run did not
    produce, marked with the run they came from."""
    new = {what: (value, "met" if ok else "**not met**") for what, value, ok in targets(report)}
    rows = []
    if old and set(ran_sections(report)) != set(ALL_SECTIONS):  # the file's rows, in their order
        mark = f" (run {old_stamp})" if old_stamp else " (an earlier run)"
        for line in old.splitlines():
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if len(cells) != 3 or cells[0] == "criterion" or set(cells[0]) <= {"-", ":"}:
                continue
            if cells[0] in new:
                rows.append((cells[0], *new.pop(cells[0])))
            else:
                stale = re.search(r"\((run \S+|an earlier run)\)$", cells[1])
                rows.append((cells[0], cells[1] if stale else cells[1] + mark, cells[2]))
    rows += [(what, value, met) for what, (value, met) in new.items()]
    if not rows:
        return None
    lines = ["| criterion | this run | |", "| --- | ---: | --- |", *(f"| {a} | {b} | {c} |" for a, b, c in rows)]
    if any("of ideal" in a for a, _, _ in rows):
        lines += ["", TARGETS_NOTE]
    return "\n".join(lines)


def write_doc(report: dict, path: Path = DOC) -> None:
    """Update docs/BENCHMARKS.md: replace the sections this run produced, keep every other one as it is."""
    head, blocks = split_doc(path.read_text()) if path.exists() else ([], [])
    old_head_stamp = next((m.group(1) for line in head if (m := re.search(r"^Generated by `[^`]*` on (\S+)", line))), None)
    order = [h for h, _ in DOC_SECTIONS]
    stamp_line = measured_line(report)
    ran = set(ran_sections(report))
    new = generated_sections(report)
    old_targets = next((b for h, b in blocks if h == TARGETS_HEADING), None)
    old_targets_stamp = None
    if old_targets:
        m = MEASURED.match(old_targets.splitlines()[0]) if old_targets.strip() else None
        old_targets_stamp = m.group(1) if m else old_head_stamp
        old_targets = "\n".join(old_targets.splitlines()[1:]) if m else old_targets
    new[TARGETS_HEADING] = _merge_targets(report, old_targets, old_targets_stamp)
    for heading, successors in LEGACY.items():  # a former combined section goes once all its successors are here
        if successors <= ran:
            new[heading] = None
    for heading in order:
        if heading not in new:
            continue
        body = new[heading]
        text = None if body is None else (body if heading in LEGACY else f"{stamp_line}\n\n{body}")
        at = next((i for i, (h, _) in enumerate(blocks) if h == heading), None)
        if at is not None:
            if text is None:
                del blocks[at]
            else:
                blocks[at][1] = text
        elif text is not None:
            rank = order.index(heading)
            before = [i for i, (h, _) in enumerate(blocks) if h in order and order.index(h) < rank]
            blocks.insert(max(before) + 1 if before else 0, [heading, text])
    # The header: which run measured which section. Sections the generator wrote before each carried its own
    # line get the one of the run the old header names.
    runs: dict[tuple[str, str], list[str]] = {}
    by_hand = []
    legacy_generated = set(order[:8])
    for block in blocks:
        h, b = block
        m = MEASURED.match(b.splitlines()[0]) if b.strip() else None
        if not m and h in legacy_generated and old_head_stamp:
            block[1] = b = f"Measured on {old_head_stamp} by `python bench/run.py`.\n\n{b}"
            m = MEASURED.match(b)
        if m:
            runs.setdefault((m.group(1), m.group(2)), []).append(h[3:])
        else:
            by_hand.append(h[3:])
    if len(runs) == 1:
        (stamp, cmd), _ = next(iter(runs.items()))
        intro = (f"Generated by `{cmd}` on {stamp} (see [bench/README.md](../bench/README.md)). Every measured number "
                 "in the generated sections comes from that one run (*model req/s* is computed, not measured).")
    else:
        parts = [f"{', '.join(hs)}: `{cmd}` on {stamp}" for (stamp, cmd), hs in sorted(runs.items())]
        intro = ("Generated by `bench/run.py` (see [bench/README.md](../bench/README.md)) over several runs, each "
                 "section marked with the run that measured it (*model req/s* is computed, not measured). "
                 + "; ".join(parts) + ".")
    if by_hand:
        intro += (" Written by hand, each with its own date and command: "
                  + "; ".join(by_hand) + ".")
    lines = ["# Benchmarks", "", intro, ""]
    for h, b in blocks:
        lines += [h, "", b, ""]
    path.write_text("\n".join(lines))
    console.print(f"wrote {path}")


def redo_from_json(args) -> int:
    """Update the page from a saved results file (its sections only); derived columns (the scheduler model) are
    recomputed and saved back into the file."""
    report = json.loads(args.from_json.read_text())
    for r in report.get("throughput", []):
        if r.get("tool") == "evolinstruct" and not r.get("skipped"):
            answers = (r.get("by_kind") or {}).get("answer", 0)
            p_answer = min(1.0, max(0.0, (answers - r["seeds"]) / (r["seeds"] * r["epochs"]))) if answers else 1.0
            model = scheduler_model(r["seeds"], r["epochs"], p_answer, r["concurrency"], r["latency"], r["sigma"],
                                    args.max_chains_model)
            r.pop("bound_req_per_s", None)
            r.pop("frac_bound", None)
            r["model_req_per_s"] = round(model, 1)
            r["frac_model"] = round(r["req_per_s"] / model, 3) if model else None
    args.from_json.write_text(json.dumps(report, indent=1, default=str))
    if report.get("throughput"):
        print_table(report["throughput"])
        for line in ratios(report["throughput"]):
            console.print(line)
    if not args.no_docs:
        write_doc(report, args.doc)
    return 0


# ---------------------------------------------------------------------------------------- main
def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (under 2 minutes): 200 seeds, 1 epoch, config A only")
    p.add_argument("--sections", default="throughput",
                   help="comma list: throughput, faults, scale, local, adaptive, batch, optimize, endpoints, shards, "
                        "ray_overhead, or all (every one of them). docs/BENCHMARKS.md gets the sections that ran; "
                        "the others stay as they are there")
    p.add_argument("--seeds-file", type=Path, default=SEEDS)
    p.add_argument("--seeds-a", type=int, default=500, help="seeds for C=256 L=0.5")
    p.add_argument("--seeds-b", type=int, default=2048, help="seeds for C=1024 L=1.0 (more than C, so C chains can be in flight)")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--dist-batch-b", type=int, default=1024, help="distilabel input_batch_size for C=1024 (0: skip)")
    p.add_argument("--seq-seconds", type=float, default=20)
    p.add_argument("--timeout", type=float, default=None, help="per tool run (default 600, quick 150)")
    p.add_argument("--no-distilabel", action="store_true")
    p.add_argument("--tools", default="evolinstruct,distilabel,sequential", help="which tools the throughput section runs")
    p.add_argument("--sim-extra", default="--rate-equal 0.1", help="extra simserver flags for the throughput runs")
    p.add_argument("--evolinstruct-ref", default=None, help="benchmark this git ref instead of the working tree")
    p.add_argument("--evolinstruct-args", default="", help="extra flags for every evolinstruct run")
    p.add_argument("--profile", action="store_true", help="record evolinstruct under py-spy (adds overhead)")
    p.add_argument("--max-chains-model", type=int, default=None,
                   help="chains active at once in the scheduler model (default 4 x concurrency, as evolinstruct)")
    p.add_argument("--write-docs", action="store_true", help="rewrite docs/BENCHMARKS.md after a --quick run too")
    p.add_argument("--no-docs", action="store_true", help="never rewrite docs/BENCHMARKS.md")
    p.add_argument("--from-json", type=Path, default=None,
                   help="measure nothing: print and update docs/BENCHMARKS.md from a saved results file")
    p.add_argument("--doc", type=Path, default=DOC, help="the page to update (default docs/BENCHMARKS.md)")
    args = p.parse_args()
    args.timeout = args.timeout or (150 if args.quick else 600)
    args.sim_extra = args.sim_extra.split()
    args.tools = set(args.tools.split(","))
    if "distilabel" not in args.tools:
        args.no_distilabel = True
    args.evolinstruct_args = args.evolinstruct_args.split()
    sections = set(ALL_SECTIONS) if args.sections == "all" else set(args.sections.split(","))
    if sections - set(ALL_SECTIONS):
        p.error(f"unknown sections: {', '.join(sorted(sections - set(ALL_SECTIONS)))}")
    if args.from_json:
        return redo_from_json(args)
    stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    args.logs = RESULTS / f"logs-{stamp}"
    args.logs.mkdir(parents=True, exist_ok=True)
    if not args.seeds_file.exists():
        console.print(f"[red]seeds file not found: {args.seeds_file}[/]")
        return 2
    if not args.no_distilabel and not DIST_PY.exists() and "throughput" in sections:
        console.print("[yellow]bench/.venv-distilabel missing: running bench/peers/setup_distilabel.sh[/]")
        if subprocess.run(["bash", str(BENCH / "peers" / "setup_distilabel.sh")]).returncode != 0:
            console.print("[red]distilabel setup failed; continuing without it[/]")
            args.no_distilabel = True

    report: dict = {"date": stamp, "quick": args.quick, "machine": machine_info(), "versions": versions(args),
                    "epochs": 1 if args.quick else args.epochs, "max_tokens": args.max_tokens,
                    "sim_extra": args.sim_extra, "throughput": [],
                    "sections": [s for s in ALL_SECTIONS if s in sections], "loadavg": list(os.getloadavg())}
    console.print(f"machine: {report['machine']}\nversions: {report['versions']}")
    started = time.perf_counter()
    sys.path.insert(0, str(BENCH))
    import scale_bench
    from batchbench import md as batch_md
    from batchbench import section_batch

    def batch(args) -> dict:  # --batch rounds vs online (bench/batchbench.py)
        result = section_batch(args.seeds_file, seeds=100 if args.quick else 500, epochs=args.epochs)
        console.print(batch_md(result))
        return result

    runners = {"throughput": section_throughput, "faults": section_faults, "scale": section_scale,
               "local": section_local, "adaptive": section_adaptive, "batch": batch, "optimize": section_optimize,
               **{name: (lambda args, name=name: getattr(scale_bench, f"section_{name}")(args, sys.modules[__name__]))
                  for name in ("endpoints", "shards", "ray_overhead")}}  # issue 13's scale-out (bench/scale_bench.py)
    for name in ALL_SECTIONS:
        if name not in sections:
            continue
        try:
            report[name] = runners[name](args)
        except Exception as exc:  # one failed section must not cost the others' results: it is reported, the
            # page keeps its earlier text, and the run exits 1
            console.print(f"[red]section {name} failed:[/] {exc!r}\n{traceback.format_exc()}")
            report[name] = {"error": repr(exc), "ok": False}
            if name == "throughput":
                report["throughput"] = []
                report["throughput_error"] = repr(exc)
    report["profiles"] = {r["label"]: r["profile"] for r in report["throughput"] if r.get("profile")}
    report["seconds"] = round(time.perf_counter() - started, 1)

    if report["throughput"]:
        print_table(report["throughput"])
        for line in ratios(report["throughput"]):
            console.print(line)
    for name, prof in (report.get("profiles") or {}).items():
        console.print(f"\n[bold]py-spy {name}[/] ({prof['samples']} samples), top self:")
        for fn, pct in prof["self"][:15]:
            console.print(f"  {pct:5.1f}%  {fn}")
    out = RESULTS / f"{stamp}{'-quick' if args.quick else ''}.json"
    out.write_text(json.dumps(report, indent=1, default=str))
    shutil.copyfile(out, RESULTS / "latest.json")
    console.print(f"results: {out} (logs in {args.logs}); {report['seconds']}s")
    if not args.no_docs and (not args.quick or args.write_docs):
        write_doc(report, args.doc)
    bad = [r for r in report["throughput"] if r.get("timed_out") or r.get("rc")]
    if report.get("faults") and not report["faults"].get("ok"):
        bad.append(report["faults"])
    if report.get("adaptive") and not report["adaptive"].get("ok"):
        bad.append(report["adaptive"])
    bad += [report[n] for n in ALL_SECTIONS if isinstance(report.get(n), dict) and report[n].get("error")]
    if report.get("throughput_error"):
        bad.append(report["throughput_error"])
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
