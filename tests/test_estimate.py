"""evolve/estimate.py: the plan of a run, made without a call, against what real runs do.

The fast tests check the plan's arithmetic and its speed on the paper's scale (1,000 Alpaca seeds x 4
epochs) with every network connection refused, and check its call range against real runs of the
scripted backend. The slow one runs a real evolve against the latency-simulating server
(bench/simserver.py, a subprocess) and checks the range made before the run, and the range made from a
half-done run's store, against the calls the run sent.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evolinstruct.calls import BudgetExhausted
from evolinstruct.cli import app
from evolinstruct.evaluate.runner import EvalConfig, run_eval
from evolinstruct.evolve.config import Algorithm, BudgetConfig, EvolveConfig, Roles, Source
from evolinstruct.evolve.estimate import (
    DEFAULT_ANSWER_TOKENS,
    DEFAULT_ELIMINATION_RATE,
    estimate_eval,
    estimate_evolve,
    estimate_score,
    estimate_vs_actual,
    with_estimate,
)
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Transport
from evolinstruct.quality.score.run import ScoreOptions
from evolinstruct.store import RunStore
from runhelpers import simserver as running_simserver
from scripted import on, write_seeds

ROOT = Path(__file__).resolve().parents[1]
SCRIPTED = ModelSpec(backend="scripted", model="s")


def _digest(text: str) -> int:
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


# A mix of outcomes: about 30% of judgements "Equal" (rule 1), about 15% of evolutions copy the prompt's
# words (rule 4, before the judge), decided by the text alone, so every run of a config is the same.
MIXED_RULES = (
    (on("equality"), lambda p: "Equal" if _digest(p.second) % 10 < 3 else "Not Equal"),
    (lambda p: p.purpose == "evolve" and _digest(p.given) % 20 < 3, lambda p: f"The given prompt, {p.given}"),
)


def _seeds(tmp_path: Path, n: int, outputs: bool = False) -> str:
    instructions = [f"Explain topic number {i} to a curious student in plain words." for i in range(n)]
    outs = [f"Topic {i} is explained here." for i in range(n)] if outputs else None
    return write_seeds(tmp_path / "seeds.jsonl", instructions, outs)


def _config(seeds: str, epochs: int = 3, spec: ModelSpec = SCRIPTED, **algorithm) -> EvolveConfig:
    return EvolveConfig(source=Source(seeds=seeds), algorithm=Algorithm(epochs=epochs, **algorithm),
                        roles=Roles(evolver=spec), transport=Transport(concurrency=8))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any connection attempt fails the test: an estimate sends nothing."""

    def refuse(*_args, **_kwargs):
        raise AssertionError("the estimate tried to open a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


# ------------------------------------------------------------------------------------------ fast
def test_paper_scale_estimate_is_fast_offline_and_writes_nothing(tmp_path: Path, shared_data: Path, no_network) -> None:
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4o-mini": {"input": 0.15, "output": 0.6}}))
    run_dir = tmp_path / "runs" / "alpaca-1k"
    config = EvolveConfig(
        source=Source(seeds=str(shared_data / "seeds" / "alpaca_52k.json"), limit=1000),
        algorithm=Algorithm(epochs=4),
        roles=Roles(evolver=ModelSpec(backend="openai", model="gpt-4o-mini")),
        transport=Transport(concurrency=64),
        budget=BudgetConfig(prices=str(prices)),
    )
    started = time.perf_counter()
    est = estimate_evolve(config, run_dir, latency=2.0)
    took = time.perf_counter() - started
    assert took < 5, f"the estimate took {took:.1f} s"
    assert not run_dir.exists() and not (tmp_path / "runs").exists()

    assert est.items == 1000 and est.epochs == 4
    assert est.calls["evolve"] == (4000, 4000)
    assert est.calls["answer"] == (1000 + 4000 * (1 - DEFAULT_ELIMINATION_RATE), 5000)
    assert est.calls["equality"] == (4000 * (1 - DEFAULT_ELIMINATION_RATE), 4000)
    assert est.total_calls == (9000, 13000)
    assert est.elimination_rate == DEFAULT_ELIMINATION_RATE and "assumed" in est.elimination_source
    assert est.tokenizers == {"answer": "chars/4", "evolve": "chars/4", "equality": "chars/4"}
    # Every evolving prompt carries a template of ~600-950 characters: 150-250 tokens plus the instruction.
    evolve_tokens = est.by_purpose["evolve"].prompt_tokens
    assert 150 * 4000 < evolve_tokens[0] <= evolve_tokens[1] < 400 * 4000
    lo, hi = est.cost_online
    assert 0 < lo < hi
    # The ceiling: every call at its max tokens, priced online.
    ceiling = (est.prompt_tokens[1] * 0.15 + (9000 * 2048 + 4000 * 16) * 0.6) / 1e6
    assert hi == pytest.approx(ceiling, rel=1e-6)
    assert est.cost_batch == pytest.approx((lo / 2, hi / 2))
    assert est.batch_source.startswith("50%")
    assert est.time_s == pytest.approx((9000 * 2.0 / 64, 13000 * 2.0 / 64))
    data = est.to_dict()
    json.dumps(data)  # stats.json can hold it
    assert data["calls"] == [9000, 13000] and data["elimination_rate"] == 0.5


def test_estimate_contains_the_calls_of_scripted_runs(tmp_path: Path, scripted) -> None:
    scripted(*MIXED_RULES)
    config = _config(_seeds(tmp_path, 40), epochs=3)
    before = estimate_evolve(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    stats = run_evolve(config, tmp_path / "run")
    assert stats["eliminated"].get("no_information_gain") and stats["eliminated"].get("copied_prompt_words")
    sent = stats["calls_by_purpose"]["sent"]
    for purpose, (lo, hi) in before.calls.items():
        assert lo <= sent.get(purpose, 0) <= hi, (purpose, lo, sent.get(purpose), hi)
    lo, hi = before.calls_to_send
    assert lo <= stats["llm_calls"] <= hi

    # From the finished run's store: the observed rates, and nothing left to send.
    after = estimate_evolve(config, tmp_path / "run")
    observed = sum(stats["eliminated"].values()) / stats["evolutions"]["attempted"]
    assert after.elimination_rate == pytest.approx(observed) and "observed" in after.elimination_source
    assert after.store_matches is True
    assert after.calls_to_send == (0, 0)
    for purpose, (lo, hi) in after.calls.items():
        assert lo <= sent.get(purpose, 0) <= hi
        assert hi - lo < 0.5 * sent.get(purpose, 1) or purpose == "evolve"  # much narrower than before
    assert after.by_purpose["answer"].completion_per_call[0] == pytest.approx(
        stats["tokens"]["by_purpose"]["answer"]["completion_tokens"] / stats["tokens"]["by_purpose"]["answer"]["calls"])

    merged = with_estimate(stats, before)
    assert merged["estimate"]["calls"] == [int(before.total_calls[0]), int(before.total_calls[1])]
    assert merged["estimate_vs_actual"]["calls"]["within"] is True
    assert all(v["within"] for v in merged["estimate_vs_actual"]["by_purpose"].values())


def test_a_half_done_run_is_resumed_within_the_estimate(tmp_path: Path, scripted) -> None:
    scripted(*MIXED_RULES)
    config = _config(_seeds(tmp_path, 60), epochs=3)
    config.budget = BudgetConfig(max_calls=150)
    first = run_evolve(config, tmp_path / "run")
    assert first["stopped_by"] == "max_calls"
    config.budget = BudgetConfig()
    est = estimate_evolve(config, tmp_path / "run")
    assert "observed" in est.elimination_source
    assert sum(e.stored for e in est.by_purpose.values()) == first["stored_calls"]
    stats = run_evolve(config, tmp_path / "run")
    lo, hi = est.calls_to_send
    assert lo <= stats["llm_calls"] <= hi, (lo, stats["llm_calls"], hi)


def test_kept_seed_outputs_no_judge_and_other_settings(tmp_path: Path, scripted) -> None:
    scripted()
    seeds = _seeds(tmp_path, 10, outputs=True)
    est = estimate_evolve(_config(seeds, epochs=2, seed_responses="keep", equality_check=False), None)
    assert est.calls["equality"] == (0, 0)
    assert est.calls["answer"] == (20 * (1 - DEFAULT_ELIMINATION_RATE), 20)  # no seed is answered
    assert "seed file's 10 outputs" in est.by_purpose["answer"].completion_source
    # A RUN_DIR holding a run with other settings: observed, but none of its calls would be replayed.
    run_evolve(_config(seeds, epochs=1), tmp_path / "run")
    other = estimate_evolve(_config(seeds, epochs=2), tmp_path / "run")
    assert other.store_matches is False and any("other settings" in n for n in other.notes)
    assert all(e.stored == 0 for e in other.by_purpose.values())


def test_batch_prices_from_the_table(tmp_path: Path, scripted) -> None:
    scripted()
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 1.0, "output": 2.0, "batch": {"input": 0.25, "output": 0.5}}}))
    config = _config(_seeds(tmp_path, 5), epochs=1)
    config.budget = BudgetConfig(prices=str(prices))
    est = estimate_evolve(config, None)
    assert est.batch_source == "the table's batch prices"
    assert est.cost_batch == pytest.approx((est.cost_online[0] / 4, est.cost_online[1] / 4))


def test_score_estimate(tmp_path: Path, scripted) -> None:
    scripted()
    run_evolve(_config(_seeds(tmp_path, 6), epochs=2), tmp_path / "run")
    options = ScoreOptions(difficulty=True, complexity=True, backend="scripted", model="s")
    est = estimate_score(tmp_path / "run", options)
    kept = sum(1 for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines() if line.strip())
    assert est.calls["score_difficulty"] == (kept, kept)
    assert est.calls["score_complexity"] == (6, 6)  # one per lineage of 2+ rows
    assert est.by_purpose["score_difficulty"].completion_per_call[1] == 16


def test_estimate_vs_actual_flags_misses() -> None:
    estimate = {"calls_to_send": [10, 20], "by_purpose": {"evolve": {"to_send": [10, 10]}},
                "cost_online": [0.1, 0.2], "time_s": [1.0, 2.0]}
    stats = {"llm_calls": 25, "calls_by_purpose": {"sent": {"evolve": 10}}, "cost": {"this_run": 0.15}, "seconds": 3.0}
    out = estimate_vs_actual(estimate, stats)
    assert out["calls"] == {"estimated": [10, 20], "actual": 25, "within": False}
    assert out["by_purpose"]["evolve"]["within"] is True
    assert out["cost"]["within"] is True and out["seconds"]["within"] is False


# ------------------------------------------------------------------------------------------ eval
DATA = ROOT.parent / "shared" / "data"
needs_data = pytest.mark.skipif(not (DATA / "eval").is_dir(), reason="needs ../shared/data")


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Building any backend, the local one, or converting the embedded checkpoint fails the test."""
    from evolinstruct.models import embedded, local, registry

    def refuse(*_args, **_kwargs):
        raise AssertionError("the estimate built a backend or loaded the embedded model")

    monkeypatch.setattr(registry, "build", refuse)
    monkeypatch.setattr(local.LocalBackend, "__init__", refuse)
    monkeypatch.setattr(embedded, "embedded_checkpoint", refuse)


def _eval_config(testset: str = "wizardlm", limit: int | None = 12, spec: ModelSpec | None = None, **kw) -> EvalConfig:
    roles = {"model": spec, "reference": spec, "judge": spec} if spec is not None else {}
    return EvalConfig(testset=testset, limit=limit, data_dir=str(DATA), bootstrap=20, **roles, **kw)


@needs_data
def test_eval_estimate_from_the_cli_sends_nothing_writes_nothing_loads_nothing(
    tmp_path: Path, no_network, no_model, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "eval"
    result = CliRunner().invoke(app, ["eval", "--estimate", "--testset", "wizardlm", "--limit", "12",
                                      "--data-dir", str(DATA), "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "nothing was sent" in result.output and "eval_judge" in result.output
    assert not out.exists() and list(tmp_path.iterdir()) == []
    # With a served judge and prices: a cost range, online and batch.
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"gpt-4": {"input": 30, "output": 60}, "*": {"input": 0, "output": 0}}))
    result = CliRunner().invoke(app, ["eval", "--estimate", "--limit", "12", "--data-dir", str(DATA), "-o", str(out),
                                      "--judge-backend", "openai", "--judge", "gpt-4", "--prices", str(prices),
                                      "--latency", "2"])
    assert result.exit_code == 0, result.output
    assert "$" in result.output and "time" in result.output
    assert [p.name for p in tmp_path.iterdir()] == ["prices.json"]


@needs_data
def test_eval_estimate_counts_the_calls_of_a_fresh_eval(tmp_path: Path, no_network, no_model) -> None:
    swap = estimate_eval(_eval_config(), tmp_path / "eval")
    assert swap.calls == {"eval_answer": (12, 12), "eval_reference": (12, 12), "eval_judge": (24, 24)}
    assert swap.total_calls == (12 * (1 + 1 + 2),) * 2 and swap.calls_to_send == swap.total_calls
    assert swap.items == 12 and swap.command == "eval" and swap.store_matches is None
    assert swap.chain_calls == (3, 3)  # answers in parallel, then two verdicts in a row
    # The embedded roles' ceilings: 256 answer tokens, 64 verdict tokens; the low end of an answer is the guess.
    assert swap.by_purpose["eval_answer"].completion_per_call == (DEFAULT_ANSWER_TOKENS, 256)
    assert swap.by_purpose["eval_judge"].completion_per_call == (64, 64)
    judge = swap.by_purpose["eval_judge"].prompt_tokens
    assert judge[1] - judge[0] == pytest.approx(24 * 2 * (256 - DEFAULT_ANSWER_TOKENS))  # the unknown answers
    assert not (tmp_path / "eval").exists()

    alternate = estimate_eval(_eval_config(position="alternate"), tmp_path / "eval")
    assert alternate.total_calls == (12 * 3,) * 2 and alternate.calls["eval_judge"] == (12, 12)

    mtbench = estimate_eval(_eval_config("mtbench", limit=10), None, latency=1.0)
    assert mtbench.calls == {"eval_answer": (20, 20), "eval_reference": (20, 20), "eval_judge": (40, 40)}
    assert mtbench.chain_calls == (2 + 4, 2 + 4)
    assert mtbench.time_s == (6.0, 6.0)  # 80 calls / 32 in flight x 1 s is less than one question's 6 in a row
    # A served model: its own max tokens (2048 by default) and the tokenizer it has here (characters / 4 at least).
    served = ModelSpec(backend="openai", model="gpt-4o-mini")
    paper = estimate_eval(_eval_config(spec=served, limit=None), None)
    assert paper.total_calls == (218 * 4,) * 2
    assert paper.by_purpose["eval_answer"].completion_per_call[1] == 2048
    assert paper.by_purpose["eval_judge"].completion_per_call == (100, 1024)


@needs_data
@pytest.mark.parametrize("testset", ["wizardlm", "mtbench"])
def test_eval_estimate_of_a_stored_run_is_exact(tmp_path: Path, scripted, testset: str) -> None:
    """A run stopped by --max-calls, estimated from its store: the calls to send are the calls the rerun
    sends (second turns and verdicts built on stored answers are looked up too); then nothing is left."""
    scripted()
    spec = ModelSpec(backend="scripted", model="s")
    out = tmp_path / "eval"
    with pytest.raises(BudgetExhausted):
        run_eval(_eval_config(testset, limit=6, spec=spec, max_calls=17), out)
    config = _eval_config(testset, limit=6, spec=spec)
    middle = estimate_eval(config, out)
    assert middle.store_matches is True
    store = RunStore(out, readonly=True)
    stored = {p: t["calls"] for p, t in store.call_totals().items()}
    store.close()
    assert 0 < sum(stored.values()) <= 17
    assert {p: e.stored for p, e in middle.by_purpose.items() if e.stored} == stored
    assert middle.total_calls == ((6 * 8,) * 2 if testset == "mtbench" else (6 * 4,) * 2)
    results = run_eval(config, out)
    assert middle.calls_to_send == (results["calls"]["sent"],) * 2
    for purpose, e in middle.by_purpose.items():
        assert e.to_send == (results["calls"]["by_purpose"]["sent"].get(purpose, 0),) * 2

    done = estimate_eval(config, out)
    assert done.calls_to_send == (0, 0) and done.chain_calls == (0, 0)
    assert "measured" in done.latency_source and "results.json" in done.latency_source
    assert done.by_purpose["eval_answer"].completion_source.startswith("low: observed mean")
    # A larger limit reuses every stored call: only the new questions are to send.
    more = estimate_eval(_eval_config(testset, limit=8, spec=spec), out)
    assert more.calls_to_send == ((2 * 8,) * 2 if testset == "mtbench" else (2 * 4,) * 2)
    # Other settings: `eval` would refuse the directory, so nothing counts as stored.
    other = estimate_eval(_eval_config(testset, limit=6, spec=spec, seed=7), out)
    assert other.store_matches is False and other.calls_to_send == other.total_calls
    assert any("other settings" in n for n in other.notes)


# ------------------------------------------------------------------------------------------ slow: a real server
@pytest.fixture
def simserver(tmp_path: Path) -> Iterator[str]:
    """bench/simserver.py on a free loopback port: 64 slots, 10 ms latency, 30% of judgements "Equal"."""
    with running_simserver(tmp_path, "--slots", "64", "--latency-mean", "0.01", "--rate-equal", "0.3") as url:
        yield url


@pytest.mark.slow
def test_estimate_contains_the_calls_of_a_run_against_the_simulation_server(
    tmp_path: Path, shared_data: Path, simserver: str
) -> None:
    spec = ModelSpec(backend="openai", model="sim", base_url=simserver)
    config = EvolveConfig(source=Source(seeds=str(shared_data / "seeds" / "alpaca_52k.json"), limit=120),
                          algorithm=Algorithm(epochs=3), roles=Roles(evolver=spec),
                          transport=Transport(concurrency=32), budget=BudgetConfig(max_calls=400))
    run_dir = tmp_path / "run"
    before = estimate_evolve(config, run_dir, latency=0.01)
    assert not run_dir.exists()

    # Half the run (stopped by --max-calls), then the estimate from its store, then the rest.
    half = run_evolve(config, run_dir)
    assert half["stopped_by"] == "max_calls"
    config.budget = BudgetConfig()
    middle = estimate_evolve(config, run_dir, latency=0.01)
    rest = run_evolve(config, run_dir)
    assert rest["stopped_by"] is None

    total = half["llm_calls"] + rest["llm_calls"]
    lo, hi = before.calls_to_send
    assert lo <= total <= hi, (lo, total, hi)
    sent = {p: half["calls_by_purpose"]["sent"].get(p, 0) + rest["calls_by_purpose"]["sent"].get(p, 0)
            for p in ("answer", "evolve", "equality")}
    for purpose, (lo, hi) in before.calls.items():
        assert lo <= sent[purpose] <= hi, (purpose, lo, sent[purpose], hi)
    lo, hi = middle.calls_to_send
    assert lo <= rest["llm_calls"] <= hi, (lo, rest["llm_calls"], hi)
    assert "observed" in middle.elimination_source
    assert abs(middle.elimination_rate - 0.3) < 0.15  # the server's 30% of "Equal" judgements
    print(json.dumps({"before": before.to_dict(), "middle": middle.to_dict(), "sent_total": total, "sent": sent,
                      "rest_sent": rest["llm_calls"], "eliminated": rest["eliminated"],
                      "tokens": rest["tokens"], "seconds": [half["seconds"], rest["seconds"]]}, indent=1))
