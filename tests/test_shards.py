"""Sharded runs: `evolve --shard I/N` and `evolinstruct merge`, against bench/simserver.py (deterministic answers).

Two shards merged give the unsharded run's dataset.jsonl byte for byte; the merged RUN_DIR is a run that
score, filter, report and export take and evolve resumes with nothing to send; merge refuses incomplete or mixed shards.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from runhelpers import CLI
from simfleet import start_sim, stop_sim, write_seeds


def _evolve(seeds: Path, run: Path, url: str, *extra: str) -> list[str]:
    return [*CLI, "evolve", str(seeds), "-o", str(run), "--base-url", url, "--model", "sim", "--epochs", "2",
            "--concurrency", "16", *extra]


def _ok(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env={"COLUMNS": "250", **__import__("os").environ})
    assert done.returncode == 0, (cmd, done.stdout[-2000:], done.stderr[-2000:])
    return done


@pytest.mark.parametrize("bad", ["2/2", "1", "a/3", "-1/2"])
def test_a_bad_shard_is_refused_in_one_line(tmp_path: Path, bad: str) -> None:
    result = CliRunner().invoke(app, ["evolve", "x.jsonl", "-o", str(tmp_path / "r"), "--shard", bad],
                                env={"COLUMNS": "250"})
    assert result.exit_code == 2 and "--shard must be I/N" in result.output, result.output
    assert not (tmp_path / "r").exists()


@pytest.mark.slow
def test_two_shards_merged_equal_the_unsharded_run_byte_for_byte(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", 40)
    sim = start_sim(latency=0.02)
    try:
        whole, a, b, merged = (tmp_path / n for n in ("whole", "s0", "s1", "merged"))
        _ok(_evolve(seeds, whole, sim.url))
        _ok(_evolve(seeds, a, sim.url, "--shard", "0/2"))
        _ok(_evolve(seeds, b, sim.url, "--shard", "1/2"))
        rows = [len((d / "dataset.jsonl").read_text().splitlines()) for d in (a, b)]
        assert all(rows) and sum(rows) == len((whole / "dataset.jsonl").read_text().splitlines())

        bad = CliRunner().invoke(app, ["merge", str(a), "-o", str(merged)], env={"COLUMNS": "250"})
        assert bad.exit_code == 2 and "shard 1/2 missing" in bad.output, bad.output
        bad = CliRunner().invoke(app, ["merge", str(a), str(whole), "-o", str(merged)], env={"COLUMNS": "250"})
        assert bad.exit_code == 2 and "not a shard" in bad.output, bad.output

        _ok([*CLI, "merge", str(a), str(b), "-o", str(merged)])
        for name in ("dataset.jsonl", "eliminated.jsonl", "errors.jsonl"):
            assert (merged / name).read_bytes() == (whole / name).read_bytes(), name
        stats, ref = (json.loads((d / "stats.json").read_text()) for d in (merged, whole))
        for key in ("seeds", "kept", "dataset_rows", "eliminated", "evolutions", "by_op", "stored_calls"):
            assert stats[key] == ref[key], key
        assert stats["llm_calls"] == sum(json.loads((d / "stats.json").read_text())["llm_calls"] for d in (a, b))

        # The merged RUN_DIR is an ordinary run: evolve resumes it with nothing left to send, report and export take it.
        resumed = _ok(_evolve(seeds, merged, sim.url))
        assert json.loads((merged / "stats.json").read_text())["llm_calls"] == 0, resumed.stdout[-1000:]
        assert (merged / "dataset.jsonl").read_bytes() == (whole / "dataset.jsonl").read_bytes()
        for d in (merged, whole):  # score and filter treat it as the unsharded run
            _ok([*CLI, "score", str(d), "--heuristics"])
            _ok([*CLI, "filter", str(d), "--no-embed", "--name", "eq"])
        assert (merged / "dataset.jsonl").read_bytes() == (whole / "dataset.jsonl").read_bytes()
        assert ((merged / "filtered" / "eq" / "dataset.jsonl").read_bytes()
                == (whole / "filtered" / "eq" / "dataset.jsonl").read_bytes())
        _ok([*CLI, "report", str(merged), "--no-map"])
        _ok([*CLI, "export", str(merged), "-o", str(tmp_path / "export.jsonl")])
        assert (merged / "report.html").stat().st_size > 0 and (tmp_path / "export.jsonl").stat().st_size > 0
    finally:
        stop_sim(sim)
