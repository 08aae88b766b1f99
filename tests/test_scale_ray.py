"""Ray: `serve --engine embedded` (a Ray Serve fleet of our in-process model) and `evolve --ray N` (shards as
Ray tasks). One local Ray cluster for all of them (conftest `ray_cluster`, 2 CPUs); a test that uses it is
slow (conftest marks it).

- Two embedded replicas answer chat completions through the openai SDK, and an evolve run against them completes.
- `evolve --ray 2` against bench/simserver.py gives the unsharded run's dataset byte for byte, even when one
  shard's worker process is SIGKILLed mid-run: Ray retries the task, it resumes from its shard's store, and no
  stored call is sent again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest

from evolinstruct.evolve import Algorithm, EvolveConfig, ExecutorConfig, Source
from evolinstruct.evolve.config import Roles, SamplingConfig
from evolinstruct.models import ModelSpec, Transport
from runhelpers import CLI, EXAMPLES, stored_calls
from simfleet import start_sim, stop_sim, write_seeds


@pytest.mark.parametrize(("args", "why"), [
    (["--engine", "gpu"], "--engine must be one of embedded, local, vllm"),
    (["--engine", "vllm"], "--engine vllm needs --model"),
    (["--cpus-per-replica", "0"], "--cpus-per-replica more than 0"),
    # No vLLM on the CPU machines: the one line that says what to install, before any Ray cluster starts.
    # (slow: importing ray.serve.llm takes ~3 s)
    pytest.param(["--engine", "vllm", "--model", "Qwen/Qwen2.5-0.5B-Instruct"], "pip install 'evolinstruct[ray-vllm]'",
                 marks=pytest.mark.slow),
])
def test_serve_refuses_bad_options_before_starting_ray(args: list[str], why: str) -> None:
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    result = CliRunner().invoke(app, ["serve", *args], env={"COLUMNS": "250"})
    assert result.exit_code == 2 and why in result.output, result.output
    assert "starting" not in result.output, result.output  # the one line is the error, no "starting..." before it


def test_serve_embedded_two_replicas_answers_and_an_evolve_run_completes(ray_cluster: None, tmp_path: Path) -> None:
    """`evolinstruct serve` as users run it (a process, joining the session's cluster with --address): it waits
    for its replicas, prints the URL and model, serves the openai SDK and an evolve run, and stops on Ctrl-C."""
    import openai
    import ray
    from ray import serve

    from conftest import free_port

    port = free_port()
    proc = subprocess.Popen([*CLI, "serve", "--engine", "embedded", "--replicas", "2", "--cpus-per-replica", "0.5",
                             "--port", str(port), "--address", ray.get_runtime_context().gcs_address],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "COLUMNS": "250"})
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("serving "):
                break
        assert lines and lines[-1].startswith("serving "), "".join(lines)[-3000:]
        model, base_url = lines[-1].split()[1], lines[-1].split(" at ")[1].strip()
        assert base_url == f"http://127.0.0.1:{port}/v1"
        assert serve.status().applications["evolinstruct"].deployments["chat"].replica_states.get("RUNNING") == 2
        client = openai.OpenAI(base_url=base_url, api_key="none")
        assert [m.id for m in client.models.list().data] == [model]
        reply = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "Name a fruit."}],
                                               max_tokens=12, seed=3, temperature=0.7)
        assert reply.choices[0].message.content.strip() and reply.usage.completion_tokens > 0
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], max_tokens=4)

        run = tmp_path / "run"
        done = subprocess.run([*CLI, "evolve", str(EXAMPLES), "-o", str(run), "--base-url", base_url,
                               "--model", model, "--limit", "2", "--epochs", "1", "--max-tokens", "24",
                               "--concurrency", "8"], capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-2000:]
        stats = json.loads((run / "stats.json").read_text())
        assert stats["seeds"] == 2 and stats["evolutions"]["attempted"] == 2 and stats["pending_failures"] == 0
        assert stats["llm_calls"] >= 4

        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=120)
        assert proc.returncode == 0 and "stopped." in rest, rest[-2000:]
        with pytest.raises(openai.APIConnectionError):  # the fleet is gone, not just this process
            openai.OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=5).models.list()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _config(seeds: Path, url: str) -> EvolveConfig:
    return EvolveConfig(source=Source(seeds=str(seeds)), algorithm=Algorithm(epochs=2),
                        sampling=SamplingConfig(max_tokens=2048, temperature=1.0, top_p=0.9),
                        roles=Roles(evolver=ModelSpec(backend="openai", model="sim", base_url=url)),
                        transport=Transport(concurrency=8), executor=ExecutorConfig())


def test_evolve_on_ray_survives_a_killed_shard_worker(ray_cluster: None, tmp_path: Path) -> None:
    from evolinstruct.scale.ray_run import evolve_on_ray

    seeds = write_seeds(tmp_path / "seeds.jsonl", 60)
    sim = start_sim(latency=0.1)
    try:
        whole = tmp_path / "whole"
        done = subprocess.run([*CLI, "evolve", str(seeds), "-o", str(whole), "--base-url", sim.url, "--model", "sim",
                               "--epochs", "2", "--concurrency", "8"], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]

        run = tmp_path / "ray"
        shard0 = run / "shards" / "0"
        killed: dict[str, int] = {}

        def kill_shard0() -> None:
            deadline = time.monotonic() + 120
            while stored_calls(shard0) < 40 and time.monotonic() < deadline:
                time.sleep(0.05)
            pid = int((shard0 / "run.lock").read_text().strip())
            os.kill(pid, signal.SIGKILL)
            time.sleep(0.5)  # the dead worker's connection is gone; what it stored stays
            killed["pid"], killed["stored"] = pid, stored_calls(shard0)

        killer = threading.Thread(target=kill_shard0)
        killer.start()
        finished: dict[int, dict] = {}
        stats = evolve_on_ray(_config(seeds, sim.url), run, 2, on_shard=lambda i, s: finished.__setitem__(i, s))
        killer.join()
        assert killed["stored"] >= 40
        assert int((shard0 / "run.lock").read_text().strip()) != killed["pid"]  # Ray ran it again, elsewhere
        assert finished[0]["resumed"] is True
        # The retried shard sent only calls its store did not hold: none was sent twice.
        assert stored_calls(shard0) == killed["stored"] + finished[0]["llm_calls"]
        assert (run / "dataset.jsonl").read_bytes() == (whole / "dataset.jsonl").read_bytes()
        assert stats["seeds"] == 60 and stats["pending_failures"] == 0
        assert set(stats["ray_seconds"]) == {"ray_start", "shards", "merge"}
    finally:
        stop_sim(sim)



def test_a_failed_shard_stops_the_other_shards(ray_cluster: None, tmp_path: Path) -> None:
    """One shard fails (its RUN_DIR cannot be made): the error comes back and the other shard's task is cancelled,
    not left writing its store on the cluster, where a rerun would run the same shard twice at once."""
    from evolinstruct.scale.ray_run import evolve_on_ray

    seeds = write_seeds(tmp_path / "seeds.jsonl", 60)
    sim = start_sim(latency=0.2)
    try:
        run = tmp_path / "ray"
        (run / "shards").mkdir(parents=True)
        (run / "shards" / "1").write_text("not a directory")
        with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the store says about a file in its way
            evolve_on_ray(_config(seeds, sim.url), run, 2)
        time.sleep(1.5)  # a cancelled worker is gone within this
        stored = stored_calls(run / "shards" / "0")
        time.sleep(2.0)
        assert stored_calls(run / "shards" / "0") == stored, "the other shard kept running"
        assert stored < 60 * 5  # it was stopped before it finished
    finally:
        stop_sim(sim)

def test_evolve_ray_cli_splits_max_calls_and_a_rerun_finishes(ray_cluster: None, tmp_path: Path) -> None:
    """`evolve --ray 2` through the CLI (in this process, so it uses the session cluster): --max-calls holds for
    the whole run (split per shard), the stopped run resumes to the unsharded run's dataset."""
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    seeds = write_seeds(tmp_path / "seeds.jsonl", 30)
    sim = start_sim(latency=0.02)
    try:
        base = ["evolve", str(seeds), "--base-url", sim.url, "--model", "sim", "--epochs", "2", "--concurrency", "8"]
        whole = tmp_path / "whole"
        done = subprocess.run([*CLI, *base, "-o", str(whole)], capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        run = tmp_path / "ray"
        env = {"COLUMNS": "250"}
        stopped = CliRunner().invoke(app, [*base, "-o", str(run), "--ray", "2", "--max-calls", "25"], env=env)
        assert stopped.exit_code == 0, stopped.output
        stats = json.loads((run / "stats.json").read_text())
        assert stats["stopped_by"] == "max_calls" and stats["llm_calls"] <= 25 and stats["stored_calls"] <= 25
        assert [stats["shards"][k]["llm_calls"] <= n for k, n in (("0/2", 13), ("1/2", 12))] == [True, True]
        finished = CliRunner().invoke(app, [*base, "-o", str(run), "--ray", "2"], env=env)
        assert finished.exit_code == 0, finished.output
        assert "shard 0/2" in finished.output and "shard 1/2" in finished.output
        assert (run / "dataset.jsonl").read_bytes() == (whole / "dataset.jsonl").read_bytes()
        again = json.loads((run / "stats.json").read_text())
        assert again["stopped_by"] is None and again["stored_calls"] == stats["stored_calls"] + again["llm_calls"]
    finally:
        stop_sim(sim)
