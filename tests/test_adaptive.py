"""Adaptive operation weights (evolve/adaptive.py, `--op-weights adaptive`) through run_evolve on the scripted
backend: the pilot's weights, the floor, and determinism at any concurrency and across stops and resume."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from evolinstruct.evolve.adaptive import PILOT_INCOMPLETE, adaptive_weights, survival, with_floor
from evolinstruct.evolve.config import Algorithm, BudgetConfig, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Result, Transport
from runhelpers import simserver
from scripted import write_seeds

SCRIPTED = ModelSpec(backend="scripted", model="s")
FLOOR = 0.05


def failing(op: str):
    """A rule: every evolution by `op` copies the prompt's words (rule 4 eliminates it, no further call)."""
    return (lambda p: p.purpose == "evolve" and p.op == op,
            lambda p: f"Here is the rewritten prompt: {p.given} With more detail.")


def seeds(tmp_path: Path, n: int = 24) -> str:
    return write_seeds(tmp_path / "seeds.jsonl", [f"Describe thing number {i} and its uses." for i in range(n)])


def config(path: str, concurrency: int = 4, pilot: int | None = 8, epochs: int = 2, **algorithm) -> EvolveConfig:
    return EvolveConfig(source=Source(seeds=path),
                        algorithm=Algorithm(epochs=epochs, pilot=pilot, op_floor=FLOOR, **algorithm),
                        sampling=SamplingConfig(max_tokens=64), roles=Roles(evolver=SCRIPTED),
                        transport=Transport(concurrency=concurrency))


def outputs(run_dir: Path) -> tuple[bytes, bytes]:
    return (run_dir / "dataset.jsonl").read_bytes(), (run_dir / "eliminated.jsonl").read_bytes()


def ops_of(run_dir: Path, seed_ids: set[str]) -> Counter:
    rows = [json.loads(line) for name in ("dataset.jsonl", "eliminated.jsonl")
            for line in (run_dir / name).read_text().splitlines()]
    return Counter(r["op"] for r in rows if r["epoch"] > 0 and r["root_id"] in seed_ids)


def test_the_floor_keeps_every_weighted_operation_and_the_posterior_ranks_them():
    assert survival(0, 0) == 0.5 and survival(3, 1) == pytest.approx(4 / 6)
    got = with_floor({"a": 0.9, "b": 0.09, "c": 0.01, "z": 0.0}, 0.05)
    assert got["z"] == 0 and got["c"] == 0.05 and got["b"] == pytest.approx(0.09 * 0.95 / 0.99, abs=1e-6)
    assert sum(got.values()) == pytest.approx(1)
    weights = adaptive_weights({"a": 1, "b": 1}, {"a": Counter(kept=9), "b": Counter(eliminated=9)}, 0.05)
    assert weights["a"] > 0.9 and weights["b"] == pytest.approx(1 / 11 / (10 / 11 + 1 / 11))
    with pytest.raises(ValueError, match="op-floor"):
        with_floor({"a": 1, "b": 1, "c": 1}, 0.4)


def test_an_operation_that_always_fails_drops_to_the_floor_after_the_pilot(tmp_path, scripted):
    scripted(failing("concretizing"))
    path = seeds(tmp_path, 40)
    stats = run_evolve(config(path, pilot=20), tmp_path / "run")
    w = stats["op_weights"]
    assert w["mode"] == "adaptive" and w["pilot_seeds"] == 20 and w["pilot_complete"]
    assert w["configured"]["concretizing"] == pytest.approx(1 / 6, abs=1e-6)
    assert w["survival_pilot"]["concretizing"]["attempted"] > 0 and w["survival_pilot"]["concretizing"]["survival"] == 0
    assert w["adaptive"]["concretizing"] == FLOOR
    assert all(share > FLOOR for op, share in w["adaptive"].items() if op != "concretizing")
    assert sum(w["adaptive"].values()) == pytest.approx(1)
    # The seeds after the pilot draw with the new weights: concretizing about 5% of their evolutions.
    after = w["survival_after"]
    assert sum(c["attempted"] for c in after.values()) == 20 * 2
    assert after["concretizing"]["attempted"] <= 5
    # A fixed-weight run of the same seeds draws it about a sixth of the time, pilot and rest alike.
    fixed = run_evolve(config(path, pilot=None), tmp_path / "fixed")
    assert "op_weights" not in fixed
    seed_rows = [json.loads(line) for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    pilot = {r["id"] for r in seed_rows if r["epoch"] == 0 and int(r["instruction"].split()[3]) < 20}
    rest = {r["id"] for r in seed_rows if r["epoch"] == 0} - pilot
    assert ops_of(tmp_path / "fixed", rest)["concretizing"] > after["concretizing"]["attempted"] + 2
    # The pilot's chains are the fixed run's: they drew with the configured weights.
    assert ops_of(tmp_path / "run", pilot) == ops_of(tmp_path / "fixed", pilot)


def test_the_dataset_is_byte_identical_at_concurrency_1_and_64(tmp_path, scripted):
    scripted(failing("concretizing"), failing("deepening"))
    path = seeds(tmp_path, 30)
    one = run_evolve(config(path, concurrency=1), tmp_path / "c1")
    many = run_evolve(config(path, concurrency=64), tmp_path / "c64")
    assert outputs(tmp_path / "c1") == outputs(tmp_path / "c64")
    assert one["op_weights"] == many["op_weights"] and one["by_op"] == many["by_op"]


@pytest.mark.parametrize("max_calls", [9, 40, 80])  # stopped inside the pilot, at its end, after it
def test_a_stopped_run_resumes_to_the_uninterrupted_dataset(tmp_path, scripted, max_calls):
    scripted(failing("concretizing"))
    path = seeds(tmp_path, 20)
    whole = run_evolve(config(path, concurrency=8), tmp_path / "whole")
    base = config(path, concurrency=3)
    stopped = run_evolve(replace(base, budget=BudgetConfig(max_calls=max_calls)), tmp_path / "run")
    assert stopped["stopped_by"] == "max_calls"
    resumed = run_evolve(base, tmp_path / "run")
    assert resumed["resumed"] and resumed["llm_calls"] + max_calls == whole["llm_calls"]  # nothing sent twice
    assert outputs(tmp_path / "run") == outputs(tmp_path / "whole")
    assert resumed["op_weights"]["adaptive"] == whole["op_weights"]["adaptive"]


def test_a_pilot_with_a_failed_call_holds_the_other_seeds_until_the_rerun(tmp_path, scripted):
    path = seeds(tmp_path, 12)
    script = scripted((lambda p: p.purpose == "answer" and "number 3 " in p.text,
                       Result(text="", error="HTTP 500: simulated")), failing("concretizing"))
    first = run_evolve(config(path, pilot=4), tmp_path / "run")
    assert first["stopped_by"] == PILOT_INCOMPLETE and first["seeds"] == 4
    assert not first["op_weights"]["pilot_complete"] and first["op_weights"]["adaptive"] is None
    script.rules.pop(0)  # the server recovers
    again = run_evolve(config(path, pilot=4), tmp_path / "run")
    clean = run_evolve(config(path, pilot=4), tmp_path / "clean")
    assert again["stopped_by"] is None and again["seeds"] == 12
    assert outputs(tmp_path / "run") == outputs(tmp_path / "clean") and again["op_weights"] == clean["op_weights"]


def test_adaptive_settings_bind_the_run_and_bad_ones_are_refused(tmp_path, scripted):
    scripted()
    path = seeds(tmp_path, 4)
    run_evolve(config(path, pilot=2), tmp_path / "run")
    with pytest.raises(Exception, match="pilot|adaptive"):
        run_evolve(config(path, pilot=3), tmp_path / "run")
    with pytest.raises(ValueError, match="pilot"):
        Algorithm(pilot=0)
    with pytest.raises(ValueError, match="op-floor"):
        run_evolve(replace(config(path), algorithm=Algorithm(pilot=2, op_floor=0.5)), tmp_path / "other")


# ------------------------------------------------------------------ through the CLI, killed and resumed


@pytest.fixture(scope="module")
def sim_url(tmp_path_factory: pytest.TempPathFactory):
    """bench/simserver.py with per-operation elimination (add_constraints and concretizing mostly fail)."""
    with simserver(tmp_path_factory.mktemp("sim"), "--latency-mean", "0.05", "--slots", "16", "--op-elim", "add_constraints=0.9,concretizing=0.9") as url:
        yield url


def test_a_killed_adaptive_run_resumes_to_the_uninterrupted_dataset(tmp_path, sim_url):
    import subprocess

    from runhelpers import CLI, kill_after, stored_calls

    rows = [{"instruction": f"Explain how {t} works and why it matters."} for t in
            ("a lock", "a tide", "a kite", "a bell", "a lamp", "a clock", "a map", "a fern", "a cave", "a loom",
             "a sail", "a drum", "a pump", "a seed", "a well", "a mill", "a dam", "a gear", "a lens", "a wick",
             "a bridge", "a hinge", "a spring", "a valve")]
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    def cmd(run_dir: Path, concurrency: int) -> list[str]:
        return [*CLI, "evolve", str(path), "-o", str(run_dir), "--base-url", sim_url, "--model", "sim",
                "--epochs", "2", "--concurrency", str(concurrency), "--op-weights", "adaptive", "--pilot", "12"]

    whole = subprocess.run(cmd(tmp_path / "whole", 16), capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    stored = kill_after(cmd(tmp_path / "run", 4), tmp_path / "run", min_calls=30)
    assert not (tmp_path / "run" / "stats.json").exists()
    done = subprocess.run(cmd(tmp_path / "run", 4), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((tmp_path / "run" / "stats.json").read_text())
    assert stats["resumed"] and stored_calls(tmp_path / "run") == stored + stats["llm_calls"]  # none sent twice
    assert outputs(tmp_path / "run") == outputs(tmp_path / "whole")
    reference = json.loads((tmp_path / "whole" / "stats.json").read_text())
    assert stats["op_weights"] == reference["op_weights"]
    weights = stats["op_weights"]["adaptive"]
    assert weights["add_constraints"] < weights["deepening"] and weights["concretizing"] < weights["mutation"]


def test_a_refused_floor_leaves_no_bound_run_so_the_corrected_command_runs(tmp_path, scripted):
    scripted()
    path = seeds(tmp_path, 4)
    with pytest.raises(ValueError, match="op-floor"):
        run_evolve(replace(config(path), algorithm=Algorithm(pilot=2, op_floor=0.5)), tmp_path / "run")
    stats = run_evolve(config(path, pilot=2), tmp_path / "run")  # not "a run with a different config"
    assert stats["op_weights"]["pilot_seeds"] == 2


def test_pilot_or_floor_without_adaptive_weights_is_refused_not_ignored(tmp_path):
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    path = seeds(tmp_path, 4)
    for extra in (["--pilot", "5"], ["--op-floor", "0.1"]):
        result = CliRunner().invoke(app, ["evolve", path, "-o", str(tmp_path / "run"), "--estimate", *extra])
        assert result.exit_code != 0 and "--op-weights adaptive" in result.output, result.output
    assert not (tmp_path / "run").exists()
