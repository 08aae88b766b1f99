"""The `batch` section of bench/run.py: rounds, requests, waste and cost of --batch against the online run.

500 seeds x 4 epochs against bench/simserver.py (no latency, a fixed batch turnaround, 25% of evolutions
judged equal and eliminated): one online run, one --batch openai run, the same price table (batch at the
default 50%). Both datasets must be identical; the table gives rounds (bound 2E + 1), requests submitted,
the share of wasted speculative answers, and the batch cost over the online cost for the same kept rows.
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRICES = {"*": {"input": 1.0, "output": 4.0}}  # USD per 1M tokens; batch: the default 50%


def section_batch(seeds_file: Path, seeds: int = 500, epochs: int = 4, turnaround: float = 1.0,
                  rate_equal: float = 0.25) -> dict:
    cli = [sys.executable, "-c", "from evolinstruct.cli import app; app()"]
    env = {**os.environ, "OPENAI_API_KEY": "sk-bench"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        prices = work / "prices.json"
        prices.write_text(json.dumps(PRICES))
        sim = subprocess.Popen([sys.executable, str(ROOT / "bench" / "simserver.py"), "--port", "0", "--slots", "0",
                                "--latency-mean", "0", "--rate-equal", str(rate_equal),
                                "--batch-turnaround", str(turnaround)], stdout=subprocess.PIPE,
                               stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            ready, _, _ = select.select([sim.stdout], [], [], 30)
            url = sim.stdout.readline().decode().split("listening on ", 1)[1].strip() + "/v1"
            runs = {}
            for mode, extra in (("online", ["--concurrency", "256"]),
                                ("batch", ["--batch", "openai", "--batch-poll", str(turnaround / 4)])):
                out = work / mode
                started = time.perf_counter()
                done = subprocess.run([*cli, "evolve", str(seeds_file), "-o", str(out), "--limit", str(seeds),
                                       "--epochs", str(epochs), "--base-url", url, "--model", "sim",
                                       "--max-tokens", "256", "--prices", str(prices), *extra],
                                      capture_output=True, text=True, env=env, timeout=1800)
                if done.returncode != 0:
                    raise RuntimeError(f"{mode} run failed: {done.stderr[-2000:]}")
                stats = json.loads((out / "stats.json").read_text())
                runs[mode] = {"stats": stats, "seconds": round(time.perf_counter() - started, 1),
                              "dataset": (out / "dataset.jsonl").read_bytes()}
        finally:
            sim.terminate()
            sim.wait(timeout=30)
    online, batch = runs["online"]["stats"], runs["batch"]["stats"]
    b = batch["batch"]
    result = {
        "seeds": seeds, "epochs": epochs, "turnaround_s": turnaround, "rate_equal": rate_equal,
        "same_dataset": runs["online"]["dataset"] == runs["batch"]["dataset"],
        "kept_rows": runs["batch"]["dataset"].count(b"\n"),
        "rounds": b["rounds"], "round_bound": 2 * epochs + 1,
        "requests_online": online["llm_calls"], "requests_batch": b["requests_submitted"],
        "wasted": b["wasted"], "wasted_share": round(b["wasted"] / max(1, b["requests_submitted"]), 4),
        "cost_online": online["cost"]["total"], "cost_batch": batch["cost"]["total"],
        "cost_ratio": round(batch["cost"]["total"] / max(1e-12, online["cost"]["total"]), 3),
        "seconds_online": runs["online"]["seconds"], "seconds_batch": runs["batch"]["seconds"],
    }
    return result


def md(result: dict) -> str:
    r = result
    return "\n".join([
        "| seeds x epochs | rounds (bound) | requests online | requests batch | wasted (share) | cost online | cost batch | batch/online | same dataset |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        f"| {r['seeds']} x {r['epochs']} | {r['rounds']} (<= {r['round_bound']}) | {r['requests_online']} | "
        f"{r['requests_batch']} | {r['wasted']} ({r['wasted_share']:.1%}) | ${r['cost_online']:.4f} | "
        f"${r['cost_batch']:.4f} | x{r['cost_ratio']:.3f} | {'yes' if r['same_dataset'] else 'NO'} |",
    ])



def md_section(result: dict) -> str:
    """docs/BENCHMARKS.md's batch section: the setting, the table (md) and what the numbers say, with the target."""
    r = result
    more = (r["requests_batch"] - r["requests_online"]) / max(1, r["requests_online"])
    rounds = (f"Rounds {r['rounds']} = 2E (seed answers ride with epoch 1's evolutions; judge and answer share a round)"
              if r["rounds"] == 2 * r["epochs"] else f"Rounds {r['rounds']} against the bound 2E + 1 = {r['round_bound']}")
    return "\n".join([
        f"`python bench/run.py --sections batch` (bench/batchbench.py): {r['seeds']} seeds x {r['epochs']} epochs, "
        f"`--batch openai` against bench/simserver.py's batch API ({r['turnaround_s']:g} s turnaround, `--rate-equal "
        f"{r['rate_equal']:g}`), and the online run on the same server, same price table (batch at the default 50%). "
        + ("Both datasets are byte-identical." if r["same_dataset"] else "**The two datasets differ.**"),
        "",
        md(r),
        "",
        f"{rounds}. The {r['wasted']} wasted requests are speculative answers of evolutions the judge eliminated: "
        f"{more:+.1%} requests at half price, x{r['cost_ratio']:.3f} of the online cost for the same kept rows "
        f"(target: at most x0.6: {'met' if r['cost_ratio'] <= 0.6 else '**not met**'}). Wall time "
        f"{r['seconds_batch']:.0f} s batch vs {r['seconds_online']:.0f} s online here; against a real provider it is "
        f"about {r['rounds']} turnarounds.",
    ])

if __name__ == "__main__":
    seeds_file = Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "data" / "seeds" / "alpaca_52k.json"
    res = section_batch(seeds_file)
    print(json.dumps(res, indent=1))
    print(md(res))
