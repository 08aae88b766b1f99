"""`evolinstruct optimize` end to end: the embedded model through the whole loop, then `evolve --templates` with
the learned method; and a SIGKILL mid-step against bench/simserver.py, resumed. Slow (a model, a server)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from evolinstruct.evolve.config import Algorithm, EvolveConfig, SamplingConfig, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.optimize import METHOD_OP, OptimizeConfig, load_prompts, run_optimize
from runhelpers import CLI, EXAMPLES, kill_after, simserver, stored_calls

pytestmark = pytest.mark.slow


def test_embedded_model_full_loop_then_evolve_with_the_method(tmp_path):
    out = tmp_path / "opt"
    cfg = OptimizeConfig(seeds=str(EXAMPLES), steps=2, candidates=2, batch_size=1, dev_size=2, holdout=1,
                         max_tokens=8, seed=1)
    stats = run_optimize(cfg, out)
    rows = [json.loads(x) for x in (out / "history.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and stats["steps_done"] == 2
    assert rows[0]["method"] == load_prompts().init_method
    for before, after in zip(rows, rows[1:], strict=False):
        assert after["method"] == before["method_after"]  # each step starts from the last one's method
    for r in rows:
        assert len(r["candidates"]) == 2 and len(r["trajectory"]) == 1
        dev = r["dev"]
        assert 0 <= dev["success"] <= 1 and dev["n"] == 2
        assert dev["success"] <= min(dev["success_paper"], dev["success_rules"])  # --failure both: failed by either
        accepted = r["accepted"]
        expected = (r["candidates"][accepted]["method"] or r["method"]) if accepted is not None else r["method"]
        assert r["method_after"] == expected
    method = json.loads((out / "method.json").read_text())
    assert method["operations"][METHOD_OP]["method"] == rows[-1]["method_after"]
    assert set(stats["holdout"]) >= {"initial", "final"} and stats["holdout"]["initial"]["evolutions"] == 1
    assert stats["llm_calls"] == stats["stored_calls"]  # one run: every call sent once and stored

    run = tmp_path / "run"
    evolved = run_evolve(EvolveConfig(source=Source(seeds=str(EXAMPLES), limit=2),
                                      algorithm=Algorithm(epochs=1, templates=str(out / "method.json")),
                                      sampling=SamplingConfig(max_tokens=8)), run)
    assert evolved["seeds"] == 2 and evolved["evolutions"]["attempted"] == 2
    assert set(evolved["by_op"]) == {METHOD_OP}


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with simserver(tmp_path_factory.mktemp("sim"), "--latency-mean", "0.05") as url:
        yield url


def _cmd(url: str, out: Path) -> list[str]:
    return [*CLI, "optimize", str(EXAMPLES), "-o", str(out), "--evol-base-url", url, "--evol-model", "sim",
            "--steps", "2", "--candidates", "3", "--batch-size", "3", "--dev-size", "3", "--holdout", "2",
            "--concurrency", "4", "--max-tokens", "64", "--seed", "5"]


def test_sigkill_mid_step_then_rerun_repeats_no_stored_call_and_ends_at_the_same_method(tmp_path, sim_url):
    clean, killed = tmp_path / "clean", tmp_path / "killed"
    done = subprocess.run(_cmd(sim_url, clean), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    clean_stats = json.loads((clean / "stats.json").read_text())
    per_step = clean_stats["steps"][0]["calls_sent"]

    stored = kill_after(_cmd(sim_url, killed), killed, min_calls=per_step // 2)  # in the middle of step 1
    assert not (killed / "stats.json").exists() and stored < clean_stats["stored_calls"]
    done = subprocess.run(_cmd(sim_url, killed), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((killed / "stats.json").read_text())
    assert stats["resumed"] and stats["cache_hits"] >= stored
    assert stored_calls(killed) == stored + stats["llm_calls"]  # a stored call sent again would add no row
    assert stored_calls(killed) == clean_stats["stored_calls"]
    for name in ("method.json", "history.jsonl", "initial_method.json"):
        assert (killed / name).read_bytes() == (clean / name).read_bytes(), name
    assert stats["holdout"] == clean_stats["holdout"]
    assert "holdout: 2 seeds" in done.stderr


def test_optimization_report_in_chromium(tmp_path, sim_url):
    """The OPT_DIR page in a real browser: no console error, no request outside the file, the chart drawn."""
    import re

    from playwright.sync_api import sync_playwright

    out = tmp_path / "opt"
    done = subprocess.run(_cmd(sim_url, out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    page_file = tmp_path / "report.html"
    done = subprocess.run([*CLI, "report", str(out), "-o", str(page_file)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox", "--disable-gpu"])
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("request", lambda r: requests.append(r.url))
        page.goto(page_file.as_uri())
        assert page.locator("#progress svg polyline").count() == 4  # success, paper, rules, score
        assert page.locator("#steps tbody tr").count() == 2
        assert page.locator("#holdout table").count() == 1
        browser.close()
    assert not problems, problems
    assert all(re.match(r"^(file|data):", u) for u in requests), requests
