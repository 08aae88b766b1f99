"""End to end on the real embedded model: outputs, accounting, lineage, replay, config binding, export."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from evolinstruct.evolve.config import Algorithm, EvolveConfig, SamplingConfig, Source
from evolinstruct.evolve.export import export
from evolinstruct.evolve.rules import REASONS
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import Transport
from evolinstruct.store import ConfigMismatch

EXAMPLES = Path(__file__).resolve().parents[1] / "examples" / "seeds.jsonl"

pytestmark = pytest.mark.slow


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("e2e") / "run"
    config = EvolveConfig(
        source=Source(seeds=str(EXAMPLES), limit=5), algorithm=Algorithm(epochs=2, seed=3),
        sampling=SamplingConfig(max_tokens=24), transport=Transport(concurrency=8),
    )
    stats = run_evolve(config, run_dir)
    return config, run_dir, stats


def test_outputs_and_accounting(demo_run):
    _, run_dir, stats = demo_run
    for name in ("dataset.jsonl", "eliminated.jsonl", "stats.json", "run.sqlite"):
        assert (run_dir / name).exists(), name
    assert json.loads((run_dir / "stats.json").read_text()) == stats
    for key in ("seeds", "kept", "eliminated", "llm_calls", "cache_hits", "by_epoch", "by_op", "tokens", "seconds"):
        assert key in stats, key
    assert stats["seeds"] == 5
    ev = stats["evolutions"]
    assert ev["planned"] == 10
    assert ev["attempted"] + ev["not_attempted"] == ev["planned"]
    assert ev["kept"] + ev["eliminated"] + ev["errors"] == ev["attempted"]
    assert sum(stats["eliminated"].values()) == ev["eliminated"]
    assert sum(c["attempted"] for c in stats["by_op"].values()) == ev["attempted"]
    assert stats["llm_calls"] > 0 and stats["cache_hits"] == 0
    assert stats["tokens"]["completion"] > 0


def test_dataset_rows_and_lineage(demo_run):
    _, run_dir, stats = demo_run
    rows = read_jsonl(run_dir / "dataset.jsonl")
    assert len(rows) == stats["dataset_rows"] == stats["seeds_answered"] + stats["kept"]
    ids = {r["id"] for r in rows}
    seeds = [r for r in rows if r["epoch"] == 0]
    assert len(seeds) == 5 and all(r["op"] == "seed" and r["parent_id"] is None for r in seeds)
    for row in rows:
        assert set(row) >= {"instruction", "input", "output", "id", "root_id", "parent_id", "epoch", "op", "model"}
        assert row["output"].strip(), row
        if row["epoch"] > 0:
            assert row["parent_id"] in ids  # a kept child's parent is itself in the mix
            assert row["root_id"] in {s["id"] for s in seeds}
    for row in read_jsonl(run_dir / "eliminated.jsonl"):
        assert row["reason"] in REASONS and row["evidence"], row
        assert row["epoch"] >= 1


def test_rerun_replays_every_call_from_the_store(demo_run):
    config, run_dir, first = demo_run
    before = (run_dir / "dataset.jsonl").read_bytes()
    again = run_evolve(config, run_dir)
    assert again["resumed"] is True
    assert again["llm_calls"] == 0
    assert again["cache_hits"] == first["llm_calls"]
    assert (run_dir / "dataset.jsonl").read_bytes() == before


def test_other_config_is_refused(demo_run):
    config, run_dir, _ = demo_run
    other = replace(config, algorithm=replace(config.algorithm, epochs=3))
    with pytest.raises(ConfigMismatch, match="epochs"):
        run_evolve(other, run_dir)


@pytest.mark.parametrize("fmt", ["alpaca", "sharegpt", "openai"])
def test_export(demo_run, tmp_path, fmt):
    _, run_dir, stats = demo_run
    n = export(run_dir, fmt, tmp_path / f"{fmt}.jsonl")
    rows = read_jsonl(tmp_path / f"{fmt}.jsonl")
    assert n == len(rows) == stats["dataset_rows"]
    first = rows[0]
    if fmt == "alpaca":
        assert set(first) == {"instruction", "input", "output"}
    elif fmt == "sharegpt":
        assert [t["from"] for t in first["conversations"]] == ["human", "gpt"]
    else:
        assert [m["role"] for m in first["messages"]] == ["user", "assistant"]
