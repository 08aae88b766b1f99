"""The done-when run against a real OpenAI-compatible server (llama.cpp) over loopback: SIGKILL, rerun."""

from __future__ import annotations

import json
import subprocess

import pytest

from evolinstruct.seeds import read_seeds
from runhelpers import CLI, kill_after, replay_into, stored_calls


@pytest.mark.slow
def test_kill_and_resume_against_a_server(llama_server, tmp_path, shared_data):
    seeds = shared_data / "seeds" / "alpaca_52k.json"
    run_dir = tmp_path / "x"

    def command(out, concurrency):
        return [*CLI, "evolve", str(seeds), "--limit", "6", "--epochs", "2",
                "-o", str(out), "--backend", "openai", "--base-url", llama_server.base_url,
                "--model", llama_server.model, "--max-tokens", "24", "--concurrency", str(concurrency)]

    cmd = command(run_dir, 4)
    stored = kill_after(cmd, run_dir, min_calls=10)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["resumed"] is True and stats["cache_hits"] >= stored
    assert stored_calls(run_dir) == stored + stats["llm_calls"]  # no stored call was sent again
    ev = stats["evolutions"]
    assert stats["seeds"] == 6 and ev["planned"] == 12 and ev["not_attempted"] == 0 and ev["errors"] == 0
    assert ev["kept"] + ev["eliminated"] == 12
    rows = [json.loads(line) for line in (run_dir / "dataset.jsonl").read_text().splitlines()]
    first_seed = next(read_seeds(seeds))
    assert rows[0]["instruction"] == first_seed.instruction and rows[0]["model"] == llama_server.model

    # The same answers, uninterrupted and one request at a time: the same dataset, byte for byte.
    clean = tmp_path / "clean"
    replay_into(run_dir, clean)
    again = subprocess.run(command(clean, 1), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((clean / "stats.json").read_text())["llm_calls"] == 0
    assert (clean / "dataset.jsonl").read_bytes() == (run_dir / "dataset.jsonl").read_bytes()


def test_missing_key_for_a_remote_endpoint_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    seeds = tmp_path / "s.jsonl"
    seeds.write_text('{"instruction": "hi"}\n')
    proc = subprocess.run(
        [*CLI, "evolve", str(seeds), "-o", str(tmp_path / "r"),
         "--backend", "openai", "--model", "gpt-4o-mini", "--api-key-env", "MY_KEY"],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert "set the environment variable MY_KEY" in proc.stderr
