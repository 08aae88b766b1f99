"""`evolinstruct report`: a real run with the embedded model, its report opened in headless Chromium.

The scores table and filter outputs are written here by hand (other commands produce them): they are
test inputs, and the expected numbers on the page are recomputed from them, not hard-coded.
"""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from statistics import fmean

import pytest

from evolinstruct.report import ReportError, build_report
from evolinstruct.report.data import redact

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "seeds.jsonl"
CLI = [sys.executable, "-m", "evolinstruct.cli"]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run"]
SECTIONS = ["summary", "difficulty", "operations", "eliminations", "lengths", "diversity", "trees", "cost", "evaluation"]


def records_of(run_dir: Path) -> list[dict]:
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        return [json.loads(d) for (d,) in db.execute("SELECT data FROM records ORDER BY seed_index, epoch, id")]


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory, llama_server) -> Path:
    """A real run: the embedded model served by llama.cpp (the session's server; much faster than in-process)."""
    run_dir = tmp_path_factory.mktemp("report") / "run"
    done = subprocess.run([*CLI, "evolve", str(EXAMPLES), "--limit", "4", "--epochs", "2", "--max-tokens", "24",
                           "--base-url", llama_server.base_url, "--model", llama_server.model, "-o", str(run_dir)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return run_dir


def add_scores_and_filter(run_dir: Path) -> dict[int, float]:
    """Difficulty for every record (one unparsed), plus a filter's output; returns the expected mean by epoch."""
    rows, by_epoch = [], {}
    for i, r in enumerate(records_of(run_dir)):
        value = None if i == 1 else float(min(10, 2 + 2 * r["epoch"] + i % 3))
        rows.append((r["id"], "difficulty", value, "{}"))
        rows.append((r["id"], "length_tokens", float(len(r["instruction"].split())), "{}"))
        if value is not None and r["status"] == "kept":
            by_epoch.setdefault(r["epoch"], []).append(value)
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        db.execute("CREATE TABLE IF NOT EXISTS scores (record_id TEXT NOT NULL, scorer TEXT NOT NULL, value REAL, "
                   "detail TEXT NOT NULL, PRIMARY KEY (record_id, scorer))")
        db.executemany("INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)", rows)
    folder = run_dir / "filtered" / "dedup"
    folder.mkdir(parents=True)
    (folder / "filter_stats.json").write_text(json.dumps({"rows_in": 9, "rows_out": 7, "stages": [
        {"stage": "decontam", "in": 9, "removed": 1}, {"stage": "minhash", "in": 8, "removed": 1}]}))
    removed = [{"instruction": "Give three tips for sleeping well.", "reason": "near_duplicate", "evidence": {"jaccard": 0.9}},
               {"instruction": "Why is the sky blue?", "reason": "contaminated", "evidence": {"ngram": "why is the sky"}}]
    (folder / "removed.jsonl").write_text("".join(json.dumps(r) + "\n" for r in removed))
    return {e: fmean(v) for e, v in by_epoch.items()}


def test_keys_in_error_evidence_never_reach_the_page() -> None:
    evidence = {"error": "401 for Authorization: Bearer abc.def from sk-proj-0123456789abcdef", "n": 3}
    masked = redact(evidence)
    assert "abc.def" not in masked["error"] and "0123456789abcdef" not in masked["error"]
    assert masked["error"].startswith("401 for Authorization: [redacted]") and masked["n"] == 3


@pytest.mark.slow
def test_bad_inputs_name_the_file(tmp_path: Path, small_run: Path) -> None:
    with pytest.raises(ReportError, match=re.escape(str(tmp_path / "run.sqlite"))):
        build_report(tmp_path, tmp_path / "r.html")
    run = tmp_path / "copy"
    shutil.copytree(small_run, run)
    (run / "filtered" / "x").mkdir(parents=True)
    (run / "filtered" / "x" / "removed.jsonl").write_text('{"reason": "a"}\n{oops\n')
    with pytest.raises(ReportError, match=r"removed\.jsonl:2: malformed JSON"):
        build_report(run, tmp_path / "r.html", diversity_map=False)
    with pytest.raises(ReportError, match=r"nowhere/results\.json"):
        build_report(small_run, tmp_path / "r.html", [tmp_path / "nowhere"], diversity_map=False)


@pytest.mark.slow
def test_cli_report_without_scores_shows_hints(small_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "plain.html"
    done = subprocess.run([*CLI, "report", str(small_run), "-o", str(out), "--no-map"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    html = out.read_text()
    assert f"evolinstruct score {small_run}" in html  # the hint in place of the difficulty charts
    assert f"evolinstruct filter {small_run}" in html
    assert not (small_run / "report.html").exists()  # the run dir is only read


@pytest.mark.slow
def test_eval_results_are_embedded(small_run: Path, tmp_path: Path) -> None:
    eval_dir = tmp_path / "eval"
    eval_dir.mkdir()
    (eval_dir / "results.json").write_text(json.dumps({"testset": "wizardlm", "model": "tuned", "reference": "base",
                                                       "judge": "judge", "capacity_pct": 87.5, "n": 4}))
    build_report(small_run, tmp_path / "r.html", [eval_dir], diversity_map=False)
    section = (tmp_path / "r.html").read_text().split('<section id="evaluation">')[1]
    if importlib.util.find_spec("evolinstruct.report.eval_section"):
        assert "87.5%" in section and "tuned" in section
    else:  # an install without the evaluation renderer says so instead of failing
        assert "cannot render evaluation results" in section


@pytest.mark.slow
def test_report_in_chromium(small_run: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    run = tmp_path / "run"
    shutil.copytree(small_run, run)
    expected_means = add_scores_and_filter(run)
    records = records_of(run)
    kept = [r for r in records if r["status"] == "kept"]
    out = tmp_path / "report.html"
    info = build_report(run, out)
    html = out.read_text(encoding="utf-8")
    assert info["bytes"] < 500_000
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # nothing remote to load
    # The one inline script is allowed by its hash, never by 'unsafe-inline'.
    policy = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', html).group(1)
    script_src = next(d.strip() for d in policy.split(";") if d.strip().startswith("script-src"))
    assert "'unsafe-inline'" not in script_src and re.fullmatch(r"script-src 'sha256-[A-Za-z0-9+/]{43}='", script_src)

    seeds = [r for r in records if r["epoch"] == 0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        problems: list[str] = []
        requests: list[str] = []
        page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("request", lambda r: requests.append(r.url))
        # A CSP violation is a console error in Chromium; the event also names what was blocked.
        page.add_init_script("window.__csp = []; document.addEventListener('securitypolicyviolation', "
                             "e => window.__csp.push(e.violatedDirective + ' ' + e.blockedURI + ' ' + e.sample))")
        page.route(re.compile(r"^(?!file:|data:)"), lambda route: route.abort())
        page.goto(out.as_uri())

        for anchor in SECTIONS:
            assert page.locator(f"section#{anchor}").is_visible(), anchor
        cards = page.locator(".card").all_inner_texts()
        assert any(c.startswith("SEEDS") and f"\n{len(seeds)}\n" in c for c in cards), cards
        n_kept = sum(r["epoch"] > 0 for r in kept)
        assert any(c.startswith("KEPT EVOLUTIONS") and f"\n{n_kept}\n" in c for c in cards), cards

        # The paper's table for this data: mean difficulty per epoch, from the scores written above.
        table = page.locator("#difficulty table").first.inner_text()
        for epoch, mean in expected_means.items():
            assert f"{mean:.2f}" in table, (epoch, mean, table)
        assert page.locator("#difficulty svg.hist").count() == len({r["epoch"] for r in records})
        eliminations = page.locator("#eliminations").inner_text()
        assert "near_duplicate" in eliminations and "9 rows in, 7 out" in eliminations
        assert page.locator("#diversity svg.scatter circle").count() == len(kept)
        page.locator('.legend.toggles button[data-epoch="0"]').click()
        assert page.locator('svg.scatter circle.hidden[data-epoch="0"]').count() == len(seeds)

        # Tree browser: pick the second seed, its whole lineage appears; open a child, its text shows.
        page.locator("#seed-list button").nth(1).click()
        root = seeds[1]["id"]
        lineage = {r["id"] for r in records if r["root_id"] == root}
        shown = set(page.locator("#tree details.node").evaluate_all("nodes => nodes.map(n => n.dataset.id)"))
        assert shown == lineage
        child = next((r for r in records if r["root_id"] == root and r["status"] == "eliminated"),
                     next(r for r in records if r["root_id"] == root and r["epoch"] > 0))
        node = page.locator(f'#tree details.node[data-id="{child["id"]}"]')
        node.locator("summary").click()
        body = node.locator(".node-body").inner_text()
        assert " ".join(child["instruction"].split()[:5]) in " ".join(body.split())
        if child["status"] == "eliminated":
            assert child["reason"] in body
        # Search narrows the list to the lineages that mention the text.
        page.fill("#seed-search", seeds[2]["instruction"][:20])
        assert seeds[2]["instruction"][:20] in page.locator("#seed-list").inner_text()
        assert page.locator("#seed-list button").count() < len(seeds)

        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        violations = page.evaluate("window.__csp")
        browser.close()
    assert problems == []
    assert violations == []
    assert requests and all(u.startswith(("file:", "data:")) for u in requests), requests
