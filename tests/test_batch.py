"""--batch: evolve in provider batch rounds against bench/simserver.py's batch APIs (the real openai SDK).

The dataset of a batch run equals the online run's byte for byte (the server answers a batch line exactly
as the same online request); a run killed at each phase of a batch resumes without submitting any request
twice (the server counts custom_ids); expired batches and per-line errors resubmit only what is missing;
a refused key stops at once; a batch over the provider's limit is split.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runhelpers import CLI
from simfleet import launch

pytestmark = pytest.mark.slow  # real server processes

ENV = {**os.environ, "OPENAI_API_KEY": "sk-test-batch-key-123456"}
EPOCHS = 3


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("seeds") / "seeds.jsonl"
    topics = ["rivers", "prime numbers", "bread", "volcanoes", "chess", "tides", "bees", "glass", "maps", "clocks",
              "bridges", "salt", "comets", "wool", "paper", "magnets", "coral", "rain", "ink", "kites"]
    path.write_text("".join(json.dumps({"instruction": f"Explain how {t} work and why they matter.", "input": ""}) + "\n"
                            for t in topics), encoding="utf-8")
    return path


class Sim:
    def __init__(self, proc: subprocess.Popen, url: str) -> None:
        self.proc, self.base = proc, url

    @property
    def url(self) -> str:
        return self.base + "/v1"

    def stats(self) -> dict:
        with urllib.request.urlopen(self.base + "/batch/stats", timeout=10) as resp:
            return json.loads(resp.read())


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[Callable[..., Sim]]:
    procs: list[subprocess.Popen] = []

    def start(*args: str) -> Sim:
        proc, url = launch("--port", "0", "--latency-mean", "0", "--rate-equal", "0.3", "--batch-turnaround", "0.3",
                           *args, log=tmp_path / f"sim{len(procs)}.log")
        procs.append(proc)
        return Sim(proc, url)

    yield start
    for proc in procs:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)


def evolve(seeds: Path, url: str, run_dir: Path, *extra: str) -> list[str]:
    return [*CLI, "evolve", str(seeds), "-o", str(run_dir), "--base-url", url, "--model", "sim",
            "--epochs", str(EPOCHS), *extra]


def batch(seeds: Path, url: str, run_dir: Path, *extra: str) -> list[str]:
    return evolve(seeds, url, run_dir, "--batch", "openai", "--batch-poll", "0.05", *extra)


def run_ok(cmd: list[str]) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=ENV)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def stats_of(run_dir: Path) -> dict:
    return json.loads((run_dir / "stats.json").read_text(encoding="utf-8"))


def test_a_batch_run_equals_the_online_run_in_at_most_2e_plus_1_rounds(seeds: Path, sim, tmp_path: Path) -> None:
    server = sim()
    run_ok(evolve(seeds, server.url, tmp_path / "online"))
    run_ok(batch(seeds, server.url, tmp_path / "batch"))
    online, batched = (tmp_path / "online" / "dataset.jsonl").read_bytes(), (tmp_path / "batch" / "dataset.jsonl").read_bytes()
    assert online == batched and online.count(b"\n") > 20
    stats = stats_of(tmp_path / "batch")
    b = stats["batch"]
    assert 1 <= b["rounds"] <= 2 * EPOCHS + 1, b
    assert stats["seeds"] == 20 and stats["evolutions"]["errors"] == 0
    # Speculative answers of evolutions the judge eliminated: stored, counted, never in the dataset.
    assert b["wasted"] > 0 and stats["evolutions"]["eliminated"] >= b["wasted"]
    assert b["requests_submitted"] == stats["llm_calls"]
    assert server.stats()["twice"] == []


def _kill_when(cmd: list[str], ready: Callable[[], bool], timeout: float = 60) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ENV)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, f"the run ended before the kill: {proc.stderr.read().decode()[-2000:]}"
            assert time.monotonic() < deadline, "the phase to kill in never came"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _batch_states(run_dir: Path) -> list[str]:
    try:
        with sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True, timeout=5) as db:
            return [row[0] for row in db.execute("SELECT state FROM batches")]
    except sqlite3.Error:
        return []


@pytest.mark.parametrize("phase", ["upload", "create", "poll", "download"])
def test_sigkill_at_each_phase_resumes_without_submitting_twice(phase: str, seeds: Path, sim, tmp_path: Path) -> None:
    hold = [] if phase == "poll" else ["--batch-hold", f"{phase}:30"]
    server = sim(*hold, "--batch-turnaround", "1.0" if phase == "poll" else "0.3")
    run_ok(evolve(seeds, server.url, tmp_path / "online"))
    run_dir = tmp_path / "batch"
    if phase == "poll":
        _kill_when(batch(seeds, server.url, run_dir), lambda: "submitted" in _batch_states(run_dir))
        shown = subprocess.run([*CLI, "status", str(run_dir)], capture_output=True, text=True, timeout=60, env=ENV)
        text = shown.stdout + shown.stderr
        assert shown.returncode == 0 and "open batches" in text and "submitted" in text, text
    else:
        _kill_when(batch(seeds, server.url, run_dir), lambda: server.stats()["holding"] == phase)
    run_ok(batch(seeds, server.url, run_dir))
    assert server.stats()["twice"] == [], "a request was submitted twice"
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    stats = stats_of(run_dir)
    assert stats["seeds"] == 20 and stats["evolutions"]["errors"] == 0
    if phase in ("create", "poll", "download"):  # the batch the killed run created was polled, not resubmitted
        assert stats["batch"]["recovered_batches"] >= 1



@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_create_whose_answer_is_lost_is_found_not_created_again(provider: str, seeds: Path, sim,
                                                                   tmp_path: Path) -> None:
    """The provider makes the batch but its answer never arrives (the client times out): the batch is looked up,
    not created a second time by a retry (which would pay for every request in it twice)."""
    server = sim("--batch-hold", "create:4")
    env = {**ENV, "ANTHROPIC_API_KEY": "sk-ant-test-key-123456"}
    backend = ["--backend", "anthropic", "--base-url", server.base] if provider == "anthropic" else ["--base-url", server.url]
    common = [*CLI, "evolve", str(seeds), *backend, "--model", "sim", "--epochs", str(EPOCHS)]
    online = subprocess.run([*common, "-o", str(tmp_path / "online")], capture_output=True, text=True, timeout=300, env=env)
    assert online.returncode == 0, online.stderr[-3000:]
    done = subprocess.run([*common, "-o", str(tmp_path / "batch"), "--batch", provider, "--batch-poll", "0.05",
                           "--request-timeout", "1.5"], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats()["twice"] == [], "a batch was created twice"
    assert (tmp_path / "batch" / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()


def test_an_expired_batch_and_line_errors_resubmit_only_the_missing(seeds: Path, sim, tmp_path: Path) -> None:
    server = sim("--batch-expire", "1", "--batch-line-errors", "0.1")
    run_ok(evolve(seeds, server.url, tmp_path / "online"))
    run_dir = tmp_path / "batch"
    run_ok(batch(seeds, server.url, run_dir))
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    submitted = server.stats()["submitted"]
    twice = {k for k, n in submitted.items() if n > 1}
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        missing = {k for (k,) in db.execute("SELECT key FROM batch_requests WHERE state = 'missing'")}
        answered_first = {k for (k,) in db.execute("SELECT key FROM batch_requests WHERE state = 'done'")}
    assert twice and twice == missing, "resubmitted requests must be exactly those without an answer"
    assert max(submitted.values()) == 2
    assert len(answered_first) == len(submitted)
    assert stats_of(run_dir)["batch"]["resubmitted"] == len(twice)


@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_a_refused_key_stops_at_once_with_one_line(provider: str, seeds: Path, sim, tmp_path: Path) -> None:
    server = sim("--require-key", "the-right-key")
    env = {**ENV, "ANTHROPIC_API_KEY": "sk-ant-wrong-key-123456"}
    cmd = batch(seeds, server.url, tmp_path / "run")
    if provider == "anthropic":
        cmd = [*cmd[: cmd.index("--base-url")], "--backend", "anthropic", "--base-url", server.base, "--model", "sim",
               "--batch", "anthropic"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 2, done.stderr[-2000:]
    errors = [line for line in done.stderr.splitlines() if "401" in line]
    key_env = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
    assert len(errors) == 1 and key_env in errors[0] and "Traceback" not in done.stderr, done.stderr
    assert env[key_env] not in done.stderr + done.stdout


def test_a_batch_over_the_provider_limit_is_split(seeds: Path, sim, tmp_path: Path) -> None:
    server = sim("--batch-limit", "15")
    run_ok(evolve(seeds, server.url, tmp_path / "online"))
    run_dir = tmp_path / "batch"
    run_ok(batch(seeds, server.url, run_dir))
    assert (run_dir / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    assert stats_of(run_dir)["batch"]["splits"] >= 1
    # A refused batch was never processed: its requests were paid once, in the halves.
    with sqlite3.connect(run_dir / "run.sqlite") as db:
        assert db.execute("SELECT COUNT(*) FROM batches WHERE state = 'abandoned'").fetchone()[0] >= 1
    assert server.stats()["twice"]  # the refused batch's ids, counted by the server, went again in halves


def test_anthropic_online_and_batch_agree_and_a_kill_after_create_is_found_again(seeds: Path, sim,
                                                                                tmp_path: Path) -> None:
    server = sim("--batch-hold", "create:30")
    env = {**ENV, "ANTHROPIC_API_KEY": "sk-ant-test-key-123456"}
    common = ["--backend", "anthropic", "--base-url", server.base, "--model", "sim", "--epochs", str(EPOCHS)]
    online = subprocess.run([*CLI, "evolve", str(seeds), "-o", str(tmp_path / "online"), *common],
                            capture_output=True, text=True, timeout=300, env=env)
    assert online.returncode == 0, online.stderr[-3000:]
    cmd = [*CLI, "evolve", str(seeds), "-o", str(tmp_path / "batch"), *common, "--batch", "anthropic",
           "--batch-poll", "0.05"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.monotonic() + 60
    while server.stats()["holding"] != "create":
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert server.stats()["twice"] == []
    assert (tmp_path / "batch" / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()
    assert stats_of(tmp_path / "batch")["batch"]["recovered_batches"] == 1


def test_score_in_one_batch_round_equals_online_scoring(seeds: Path, sim, tmp_path: Path) -> None:
    server = sim()
    run_ok(batch(seeds, server.url, tmp_path / "run", "--epochs", "1"))
    for name in ("online", "batched"):
        (tmp_path / name).mkdir()
        for f in ("run.sqlite", "dataset.jsonl", "eliminated.jsonl", "stats.json"):
            (tmp_path / name / f).write_bytes((tmp_path / "run" / f).read_bytes())
    run_ok([*CLI, "score", str(tmp_path / "online"), "--difficulty"])
    before = server.stats()["batches"]
    run_ok([*CLI, "score", str(tmp_path / "batched"), "--difficulty", "--batch", "openai", "--batch-poll", "0.05"])
    assert server.stats()["batches"] == before + 1  # every scoring call in one batch
    assert (tmp_path / "batched" / "dataset.jsonl").read_bytes() == (tmp_path / "online" / "dataset.jsonl").read_bytes()


def test_eval_in_batch_rounds_equals_online_eval(sim, tmp_path: Path) -> None:
    server = sim()
    roles = ["--model", "sim", "--model-base-url", server.url, "--reference", "sim", "--reference-base-url", server.url,
             "--reference-seed", "7", "--judge", "sim", "--judge-base-url", server.url, "--limit", "6"]
    run_ok([*CLI, "eval", *roles, "-o", str(tmp_path / "online")])
    run_ok([*CLI, "eval", *roles, "-o", str(tmp_path / "batched"), "--batch", "openai", "--batch-poll", "0.05"])
    for name in ("answers.jsonl", "judgments.jsonl"):
        assert (tmp_path / "batched" / name).read_bytes() == (tmp_path / "online" / name).read_bytes()
    with sqlite3.connect(tmp_path / "batched" / "run.sqlite") as db:
        rounds = db.execute("SELECT COUNT(DISTINCT round) FROM batches").fetchone()[0]
    assert 2 <= rounds <= 3  # the answers, then the verdicts (both orders of a swap)
    assert server.stats()["twice"] == []
