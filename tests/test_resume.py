"""Crash safety: SIGKILL mid-run then the same command again; failed calls recorded and retried."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace

import pytest

from evolinstruct.evolve.config import Algorithm, BudgetConfig, EvolveConfig, SamplingConfig, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Request, Result, Transport
from evolinstruct.models.local import LocalBackend
from evolinstruct.models.registry import REGISTRY
from runhelpers import CLI, EXAMPLES, kill_after, replay_into, stored_calls

pytestmark = pytest.mark.slow


def test_sigkill_then_rerun_repeats_no_stored_call(tmp_path):
    run_dir = tmp_path / "run"
    cmd = [*CLI, "evolve", str(EXAMPLES), "-o", str(run_dir),
           "--limit", "6", "--epochs", "2", "--max-tokens", "16", "--concurrency", "4"]
    stored = kill_after(cmd, run_dir, min_calls=8)
    assert not (run_dir / "stats.json").exists()  # it really died before the end

    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["resumed"] is True
    assert stats["cache_hits"] >= stored  # everything stored before the kill came from the store
    # Each call sent by the rerun is a new row: a stored call sent again would not add one.
    assert stored_calls(run_dir) == stored + stats["llm_calls"]
    assert stats["evolutions"]["not_attempted"] == 0 and stats["evolutions"]["errors"] == 0
    assert stats["seeds"] == 6


def test_resumed_dataset_is_the_uninterrupted_one_at_any_concurrency(tmp_path):
    """Kill, resume, then replay the same answers uninterrupted at another concurrency: same bytes, no calls."""
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    args = ["--limit", "5", "--epochs", "2", "--max-tokens", "16", "--seed", "11"]
    base = [*CLI, "evolve", str(EXAMPLES)]
    kill_after(base + ["-o", str(killed), "--concurrency", "3", *args], killed, min_calls=6)
    assert subprocess.run(base + ["-o", str(killed), "--concurrency", "3", *args], capture_output=True, timeout=600).returncode == 0
    replay_into(killed, clean)
    done = subprocess.run(base + ["-o", str(clean), "--concurrency", "1", *args], capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((clean / "stats.json").read_text())
    assert stats["llm_calls"] == 0  # same op choices, ids and sampling seeds: every request was found
    for name in ("dataset.jsonl", "eliminated.jsonl"):
        assert (clean / name).read_bytes() == (killed / name).read_bytes(), name


def small_config(limit: int, max_tokens: int, concurrency: int, **budget) -> EvolveConfig:
    return EvolveConfig(
        source=Source(seeds=str(EXAMPLES), limit=limit), algorithm=Algorithm(epochs=2),
        sampling=SamplingConfig(max_tokens=max_tokens), transport=Transport(concurrency=concurrency),
        budget=BudgetConfig(**budget),
    )


class FailEveryThird:
    """Injects faults at the backend boundary: every third request fails with an error result.

    Registered in place of the local backend, it wraps the real one: the run's config still names
    `local`, so the healed rerun below resumes the same run with the real backend.
    """

    capabilities = LocalBackend.capabilities
    display_name = staticmethod(LocalBackend.display_name)

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> FailEveryThird:
        return cls(LocalBackend.from_spec(spec, transport))

    def __init__(self, inner):
        self.inner, self.name, self.model, self.seen = inner, inner.name, inner.model, 0

    async def generate(self, requests: list[Request]) -> list[Result]:
        results = await self.inner.generate(requests)
        out = []
        for r in results:
            self.seen += 1
            out.append(Result(error="HTTP 503: injected fault") if self.seen % 3 == 0 else r)
        return out

    async def aclose(self) -> None:
        await self.inner.aclose()


def test_failed_calls_are_recorded_then_retried(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    config = small_config(limit=4, max_tokens=16, concurrency=4)
    monkeypatch.setitem(REGISTRY, "local", FailEveryThird)  # register("local", FailEveryThird), undone below
    faulty = run_evolve(config, run_dir)
    assert faulty["failed_calls"] > 0
    assert faulty["pending_failures"] > 0
    lost = faulty["evolutions"]["errors"] + faulty["seed_errors"]
    assert lost > 0
    errors = [json.loads(x) for x in (run_dir / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == lost and all("injected fault" in e["evidence"]["error"] for e in errors)
    ev = faulty["evolutions"]
    assert ev["kept"] + ev["eliminated"] + ev["errors"] + ev["not_attempted"] == ev["planned"]

    monkeypatch.undo()
    assert REGISTRY["local"] is not FailEveryThird
    healed = run_evolve(config, run_dir)
    assert healed["evolutions"]["errors"] == 0 and healed["seed_errors"] == 0
    assert healed["evolutions"]["not_attempted"] == 0
    assert healed["pending_failures"] == 0
    assert healed["cache_hits"] > 0
    assert (run_dir / "errors.jsonl").read_text() == ""


def test_max_calls_stops_cleanly_and_resumes(tmp_path):
    run_dir = tmp_path / "run"
    config = small_config(limit=4, max_tokens=12, concurrency=2, max_calls=6)
    stopped = run_evolve(config, run_dir)
    assert stopped["stopped_by"] == "max_calls"
    assert stopped["llm_calls"] <= 6
    assert stopped["evolutions"]["not_attempted"] > 0
    assert (run_dir / "dataset.jsonl").exists()  # partial outputs are written

    finished = run_evolve(replace(config, budget=BudgetConfig()), run_dir)  # the budget is not part of the config
    assert finished["stopped_by"] is None
    assert finished["cache_hits"] >= stopped["llm_calls"]
    assert finished["evolutions"]["not_attempted"] == 0
