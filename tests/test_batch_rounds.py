"""Batch rounds in process: the round collector (batches.py) with an in-memory provider that answers with the
scripted backend's replies (tests/scripted.py), so rounds, speculation, budgets and resume are checked in
a fraction of a second. The real SDKs against the simulation server are in test_batch.py (slow)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from evolinstruct.evolve.config import (
    Algorithm,
    BatchConfig,
    BudgetConfig,
    EvolveConfig,
    Roles,
    SamplingConfig,
    Source,
)
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import ModelSpec, Request, Transport
from evolinstruct.models.batchapi import BATCH_APIS, BatchStatus, LineResult
from scripted import Script, on, write_seeds

TOPICS = ["the moon", "tea", "rivers", "bread", "owls", "glass", "snow", "maps", "bees", "clocks", "salt", "kites"]
SCRIPTED = ModelSpec(backend="scripted", model="s", base_url="http://127.0.0.1:9/v1")


class FakeProvider:
    """A paid batch service, simulated: batches end after `polls` looks; every submitted custom_id is counted."""

    provider = "fake"
    max_requests = 1000
    max_bytes = 1 << 30
    script: Script
    submitted: Counter
    batches: dict[str, list[dict[str, Any]]]

    @classmethod
    def from_spec(cls, spec: ModelSpec, transport: Transport) -> FakeProvider:
        return cls()

    def line(self, custom_id: str, model: str, request: Request) -> dict[str, Any]:
        return {"custom_id": custom_id, "model": model, "request": request}

    async def submit(self, uid: str, lines: list[dict[str, Any]], on_uploaded) -> str:
        on_uploaded(f"file-{uid}")
        batch_id = f"b{len(self.batches)}"
        self.batches[batch_id] = lines
        self.submitted.update(line["custom_id"] for line in lines)
        return batch_id

    async def find(self, uid: str, file_id: str | None, created: float, requests: int,
                   taken: frozenset[str] = frozenset()) -> str | None:
        return None

    async def poll(self, batch_id: str) -> BatchStatus:
        return BatchStatus("ended", "completed", {"total": len(self.batches[batch_id])})

    async def results(self, batch_id: str) -> dict[str, LineResult]:
        return {line["custom_id"]: LineResult(self.script.reply(line["model"], line["request"]))
                for line in self.batches[batch_id]}

    async def aclose(self) -> None:
        return None


@pytest.fixture
def provider(scripted, monkeypatch: pytest.MonkeyPatch) -> type[FakeProvider]:
    script = scripted((on("equality", r"tea|owls", where="given"), "Equal"))
    cls = type("Fake", (FakeProvider,), {"script": script, "submitted": Counter(), "batches": {}})
    monkeypatch.setitem(BATCH_APIS, "fake", cls)
    return cls


def config(seeds: str, batch: bool, epochs: int = 3, pilot: int | None = None, **budget: Any) -> EvolveConfig:
    return EvolveConfig(
        source=Source(seeds=seeds), algorithm=Algorithm(epochs=epochs, pilot=pilot), sampling=SamplingConfig(max_tokens=64),
        roles=Roles(evolver=SCRIPTED), transport=Transport(concurrency=4), budget=BudgetConfig(**budget),
        batch=BatchConfig("fake", poll=0.001) if batch else None,
    )


def test_rounds_speculation_and_the_same_dataset_as_online(provider, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [f"Describe {t}." for t in TOPICS])
    online = run_evolve(config(seeds, batch=False), tmp_path / "online")
    stats = run_evolve(config(seeds, batch=True), tmp_path / "batch")
    assert (tmp_path / "batch" / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    b = stats["batch"]
    assert b["rounds"] <= 2 * 3 + 1 and b["rounds"] == 6  # seed answers ride with epoch 1's evolutions
    assert b["idle_rounds"] == 0
    equal = sum(1 for line in (tmp_path / "batch" / "eliminated.jsonl").read_text().splitlines()
                if json.loads(line)["reason"] == "no_information_gain")
    assert equal > 0 and b["wasted"] == equal  # one speculative answer per evolution the judge eliminated
    assert b["requests_submitted"] == online["llm_calls"] + equal
    assert max(provider.submitted.values()) == 1


def test_adaptive_weights_pilot_in_batch_rounds_gives_the_online_dataset(provider, tmp_path: Path) -> None:
    """Chains held at the pilot's barrier are not in a round: the pilot's rounds go as soon as it waits."""
    seeds = write_seeds(tmp_path / "seeds.jsonl", [f"Describe {t}." for t in TOPICS])
    run_evolve(config(seeds, batch=False, pilot=4), tmp_path / "online")
    stats = run_evolve(config(seeds, batch=True, pilot=4), tmp_path / "batch")
    assert (tmp_path / "batch" / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    assert stats["batch"]["rounds"] == 12  # the pilot's 6 rounds, then the other seeds' 6
    assert stats["batch"]["idle_rounds"] == 0  # every round went because every chain in it waited


def test_max_cost_refuses_a_round_whose_worst_case_crosses_it_and_a_rerun_resumes(provider, tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", [f"Describe {t}." for t in TOPICS])
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"*": {"input": 1000.0, "output": 1000.0}}))
    run_dir = tmp_path / "run"
    stopped = run_evolve(config(seeds, batch=True, max_cost=0.5, prices=str(prices)), run_dir)
    assert stopped["stopped_by"] == "max_cost"
    assert not provider.submitted  # the first round's worst case (24 calls x 64 tokens) was already too much
    done = run_evolve(config(seeds, batch=True, max_cost=1000.0, prices=str(prices)), run_dir)
    assert done["stopped_by"] is None and done["seeds"] == len(TOPICS)
    cost = done["cost"]
    assert set(cost["by_mode"]) == {"batch"} and cost["by_mode_purpose"]["batch"]["equality"] > 0
    online = run_evolve(config(seeds, batch=False, prices=str(prices)), tmp_path / "online")
    # The same calls at the default batch discount: half the online cost.
    assert cost["total"] == pytest.approx(0.5 * online["cost"]["total"] + 0.5 * _wasted_cost(done, online), rel=1e-6)


def _wasted_cost(batch: dict, online: dict) -> float:
    """Online price of the speculative answers the online run never sent."""
    extra_prompt = batch["calls_by_purpose"]["prompt_tokens"]["answer"] - online["calls_by_purpose"]["prompt_tokens"]["answer"]
    extra_completion = (batch["calls_by_purpose"]["completion_tokens"]["answer"]
                        - online["calls_by_purpose"]["completion_tokens"]["answer"])
    return (extra_prompt + extra_completion) * 1000.0 / 1e6


def test_a_failed_openai_batch_s_errors_are_redacted(monkeypatch) -> None:
    """The provider's error text of a failed batch goes to the store and the log: never with the key."""
    import asyncio
    from types import SimpleNamespace

    from evolinstruct.models.openai_batch import OpenAIBatchAPI

    key = "sk-proj-" + "k3y" * 8
    monkeypatch.setenv("EVOL_TEST_KEY", key)
    api = OpenAIBatchAPI("http://127.0.0.1:9/v1", "EVOL_TEST_KEY")
    error = SimpleNamespace(code="token_limit_exceeded", message=f"over the limit for key {key} ({key[-12:]}x)")
    batch = SimpleNamespace(status="failed", request_counts=None, errors=SimpleNamespace(data=[error]))

    async def retrieve(batch_id: str) -> Any:
        return batch

    api.client = SimpleNamespace(batches=SimpleNamespace(retrieve=retrieve), close=api.client.close)
    status = asyncio.run(api.poll("batch_1"))
    assert status.state == "failed" and status.too_large
    assert key not in status.error and "[redacted]" in status.error and "token_limit_exceeded" in status.error


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_batch_without_backend_binds_the_run_to_the_provider_s_backend(provider: str, tmp_path: Path) -> None:
    """`--model M --batch P` (no --base-url, as README shows) is P's run, not the in-process local backend's:
    score and an online resume read the run's roles. --max-calls 0 stops before anything is sent."""
    import sqlite3

    from typer.testing import CliRunner

    from evolinstruct.cli import app

    seeds = write_seeds(tmp_path / "seeds.jsonl", ["Name a river.", "Name a bird."])
    run = tmp_path / "run"
    env = {"COLUMNS": "250", "OPENAI_API_KEY": "sk-test-not-sent-123456", "ANTHROPIC_API_KEY": "sk-ant-not-sent-123456"}
    args = ["evolve", str(seeds), "-o", str(run), "--model", "m", "--epochs", "1", "--batch", provider, "--max-calls", "0"]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    with sqlite3.connect(run / "run.sqlite") as db:
        bound = json.loads(db.execute("SELECT value FROM meta WHERE key = 'config'").fetchone()[0])
    assert bound["evolver"] == {"backend": provider, "model": "m"}
    # An in-process backend has no batch API: refused in one line, before the run dir.
    local = CliRunner().invoke(app, [*args[:2], "-o", str(tmp_path / "local"), *args[4:], "--backend", "local"], env=env)
    errors = [line for line in local.output.splitlines() if line.startswith("error:")]
    assert local.exit_code == 2 and len(errors) == 1 and "runs in-process" in errors[0], local.output
    assert not (tmp_path / "local").exists()



def test_status_shows_an_open_batch_s_whole_id_in_a_narrow_terminal(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from evolinstruct.cli import app
    from evolinstruct.store import RunStore

    store = RunStore(tmp_path / "run")
    batch_id = "msgbatch_01HkcTjaV5uDC8jWR4ZsDV8d"
    store.batch_prepare("u1", "anthropic", "claude-haiku-4-5", 1, [("k" * 64, "evolve", "claude-haiku-4-5", "{}")])
    store.batch_update("u1", state="submitted", batch_id=batch_id, status="in_progress",
                       counts={"processing": 1, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0})
    store.close()
    result = CliRunner().invoke(app, ["status", str(tmp_path / "run")], env={"COLUMNS": "80"})
    assert result.exit_code == 0 and batch_id in result.output, result.output



def test_two_same_sized_batches_killed_before_their_ids_were_recorded_are_found_as_two(tmp_path: Path) -> None:
    """Anthropic's lookup matches by time and size: two parts of a round with the same size, both created and
    neither recorded, must each find its own batch (following one twice would pay the other's requests again)."""
    import asyncio
    import datetime as dt
    from types import SimpleNamespace

    from evolinstruct.batches import BatchCollector
    from evolinstruct.models.anthropic import AnthropicBatchAPI
    from evolinstruct.store import RunStore

    store = RunStore(tmp_path / "run")
    for uid, key in (("u1", "a" * 64), ("u2", "b" * 64)):
        store.batch_prepare(uid, "anthropic", "m", 1, [(key, "evolve", "m", "{}")])
        store.batch_update(uid, state="uploaded", file_id="")
    now = dt.datetime.now(dt.UTC)
    counts = SimpleNamespace(processing=1, succeeded=0, errored=0, canceled=0, expired=0)
    listed = [SimpleNamespace(id=i, created_at=now, request_counts=counts) for i in ("msgbatch_B", "msgbatch_A")]

    class Listing:  # newest first, as the API lists them
        def __aiter__(self):
            async def gen():
                for b in listed:
                    yield b
            return gen()

    async def listing(limit: int) -> Listing:
        return Listing()

    async def main() -> list[str]:
        api = AnthropicBatchAPI(ModelSpec(backend="anthropic", model="m", base_url="http://127.0.0.1:9"), Transport())
        await api.client.close()
        api.client = SimpleNamespace(messages=SimpleNamespace(batches=SimpleNamespace(list=listing)))
        collector = BatchCollector(api, store, poll=0.001)
        collector._spawn = lambda coro: coro.close()  # only the lookups: nothing is polled here
        await collector.recover()
        return sorted(b["batch_id"] for b in store.batches())

    assert asyncio.run(main()) == ["msgbatch_A", "msgbatch_B"]
    store.close()
