#!/usr/bin/env python3
"""distilabel 1.5.3's EvolInstruct as a peer (run it with bench/.venv-distilabel/bin/python).

A pipeline LoadDataFromDicts(N Alpaca seeds) >> EvolInstruct(num_evolutions=E, generate_answers=True,
store_evolutions=True) with OpenAILLM(base_url=..., api_key="x", model=...), run with use_cache=False
and a throw-away DISTILABEL_CACHE_DIR so nothing is replayed. distilabel processes a step's input in
batches of `input_batch_size` rows: per batch, E evolve rounds (each a barrier over the batch), then one
answer per evolution. That is 2*E calls per seed (no seed answer, no equality judge).

Prints JSON {requests, seconds, req_per_s, rows, seeds, epochs, input_batch_size}; `requests` is the
difference of the sim server's /stats `requests` before and after (pass --stats-url), else 2*N*E.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

DEFAULT_SEEDS = Path(__file__).resolve().parents[3] / "shared" / "data" / "seeds" / "alpaca_52k.json"


def server_stats(url: str | None) -> dict | None:
    if not url:
        return None
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base-url", required=True)
    p.add_argument("--stats-url", default=None, help="the sim server's /stats, to count requests")
    p.add_argument("--model", default="sim")
    p.add_argument("--seeds-file", type=Path, default=DEFAULT_SEEDS)
    p.add_argument("--seeds", type=int, default=500)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--input-batch-size", type=int, default=50, help="distilabel's default is 50")
    p.add_argument("--max-tokens", type=int, default=256)
    p.add_argument("--timeout", type=int, default=120, help="OpenAILLM per-request timeout")
    a = p.parse_args()

    cache_dir = tempfile.mkdtemp(prefix="distilabel-bench-")
    os.environ["DISTILABEL_CACHE_DIR"] = cache_dir  # read lazily by distilabel.envs
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")

    from distilabel.models import OpenAILLM
    from distilabel.pipeline import Pipeline
    from distilabel.steps import LoadDataFromDicts
    from distilabel.steps.tasks import EvolInstruct

    seeds = json.loads(a.seeds_file.read_text("utf-8"))[: a.seeds]
    # The WizardLM repo's join of instruction and input (evolinstruct's default too).
    data = [{"instruction": (s["instruction"].strip() + ("\r\n" + s["input"].strip() if s.get("input", "").strip() else ""))}
            for s in seeds]

    with Pipeline(name="bench-evol-instruct") as pipeline:
        loader = LoadDataFromDicts(data=data, batch_size=max(1, min(a.input_batch_size, len(data))))
        evol = EvolInstruct(
            llm=OpenAILLM(base_url=a.base_url, api_key="x", model=a.model, timeout=a.timeout,
                          generation_kwargs={"max_new_tokens": a.max_tokens, "temperature": 1.0, "top_p": 0.9}),
            num_evolutions=a.epochs,
            generate_answers=True,
            store_evolutions=True,
            input_batch_size=a.input_batch_size,
        )
        loader >> evol

    before = server_stats(a.stats_url)
    t0 = time.perf_counter()
    distiset = pipeline.run(use_cache=False)
    seconds = time.perf_counter() - t0
    after = server_stats(a.stats_url)

    rows = 0
    answers = 0
    for _config, ds in distiset.items():
        split = ds["train"]
        rows += len(split)
        if "answers" in split.column_names:
            answers += sum(len(x or []) for x in split["answers"])
    del distiset
    shutil.rmtree(cache_dir, ignore_errors=True)
    requests = after["requests"] - before["requests"] if before and after else 2 * rows * a.epochs
    print(json.dumps({
        "requests": requests, "seconds": round(seconds, 3),
        "req_per_s": round(requests / seconds, 1) if seconds else 0.0,
        "rows": rows, "answers": answers, "seeds": len(data), "epochs": a.epochs,
        "input_batch_size": a.input_batch_size,
    }), flush=True)
    return 0 if rows == len(data) else 1


if __name__ == "__main__":
    sys.exit(main())
