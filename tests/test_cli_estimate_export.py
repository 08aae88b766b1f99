"""The CLI half of estimates and Hub-shaped exports: `evolve --estimate`, `score --estimate`, the estimate
kept in stats.json next to the actuals, `export -f hf` and its options."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.cli import app
from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Transport
from scripted import write_seeds

SEEDS = Path(__file__).resolve().parents[2] / "shared" / "data" / "seeds" / "alpaca_52k.json"
runner = CliRunner()


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: an estimate must send nothing."""

    def refuse(*_a, **_k):
        raise AssertionError("the estimate tried to open a connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)


@pytest.mark.skipif(not SEEDS.exists(), reason="needs ../shared/data")
def test_evolve_estimate_of_the_issue_prints_fast_and_sends_nothing(tmp_path: Path, no_network) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input": 0.15, "output": 0.6}}))
    out = tmp_path / "run"
    started = time.monotonic()
    result = runner.invoke(app, ["evolve", str(SEEDS), "--limit", "1000", "--epochs", "4", "--backend", "openai",
                                 "--model", "gpt-4o-mini", "--prices", str(prices), "--estimate", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert time.monotonic() - started < 5
    assert "nothing was sent" in result.output and "$" in result.output and "equality" in result.output
    assert not out.exists()


def _scripted_run(tmp_path: Path, scripted) -> Path:
    scripted()
    seeds = write_seeds(tmp_path / "seeds.jsonl", [f"Explain the idea number {i} with an example." for i in range(10)])
    config = EvolveConfig(source=Source(seeds=seeds), algorithm=Algorithm(epochs=2),
                          roles=Roles(evolver=ModelSpec(backend="scripted", model="s")), transport=Transport(concurrency=4))
    run = tmp_path / "run"
    run_evolve(config, run)
    return run


def test_a_run_keeps_its_estimate_next_to_the_actuals(tmp_path: Path, scripted) -> None:
    run = _scripted_run(tmp_path, scripted)
    stats = json.loads((run / "stats.json").read_text())
    assert stats["estimate"]["calls"][0] <= stats["llm_calls"] <= stats["estimate"]["calls"][1]
    assert stats["estimate_vs_actual"]["calls"] == {"estimated": stats["estimate"]["calls_to_send"],
                                                    "actual": stats["llm_calls"], "within": True}
    # The report shows both.
    report = tmp_path / "report.html"
    assert runner.invoke(app, ["report", str(run), "-o", str(report), "--no-map"]).exit_code == 0
    assert "Estimate and actual" in report.read_text()


def test_score_estimate_counts_one_difficulty_call_per_kept_record(tmp_path: Path, scripted, no_network) -> None:
    run = _scripted_run(tmp_path, scripted)
    before = (run / "dataset.jsonl").read_bytes()
    kept = len(before.splitlines())
    result = runner.invoke(app, ["score", str(run), "--difficulty", "--estimate"])
    assert result.exit_code == 0, result.output
    assert "score_difficulty" in result.output and f"score of {kept} items" in " ".join(result.output.split())
    assert (run / "dataset.jsonl").read_bytes() == before  # nothing written


def test_export_hf_from_the_cli_loads_with_datasets(tmp_path: Path, scripted, monkeypatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = _scripted_run(tmp_path, scripted)
    out = tmp_path / "hf"
    result = runner.invoke(app, ["export", str(run), "-f", "hf", "-o", str(out), "--test-size", "0.2",
                                 "--license", "cc-by-nc-4.0"])
    assert result.exit_code == 0, result.output
    loaded = datasets.load_dataset(str(out))
    rows = len((run / "dataset.jsonl").read_text().splitlines())
    assert loaded["train"].num_rows + loaded["test"].num_rows == rows
    card = (out / "README.md").read_text()
    assert "license: cc-by-nc-4.0" in card and "### Commands" in card
    again = runner.invoke(app, ["export", str(run), "-f", "hf", "-o", str(out)])
    assert again.exit_code == 2 and "not empty" in again.output
    wrong = runner.invoke(app, ["export", str(run), "-f", "alpaca", "--push-to-hub", "me/data"])
    assert wrong.exit_code == 2 and "go with -f hf" in wrong.output
