"""Transport hardening, through the real CLI against a real misbehaving server (tests/badserver.py, a
subprocess on loopback): empty and truncated completions, fatal backend errors, unusable URLs, huge
Retry-After values and keys echoed by servers. No model, no mocks: a few seconds in all."""

from __future__ import annotations

import asyncio
import json
import os
import select
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import free_port
from evolinstruct.cli import app
from evolinstruct.cli.display import waiting
from evolinstruct.models.base import Request, Sampling
from evolinstruct.models.openai import OpenAIBackend
from evolinstruct.redact import redact
from runhelpers import CLI

BADSERVER = Path(__file__).resolve().with_name("badserver.py")
KEY = "sk-test-GOODKEY0123456789abcdef"


@dataclass
class BadServer:
    base_url: str
    url: str

    def stats(self) -> dict:
        with urllib.request.urlopen(f"{self.url}/stats", timeout=5) as response:
            return json.loads(response.read())

    def requests(self, model: str) -> int:
        return self.stats()["requests"].get(model, 0)

    def status(self, model: str, status: int) -> int:
        return self.stats()["status"].get(f"{model}:{status}", 0)


@pytest.fixture
def bad_server() -> Iterator[BadServer]:
    proc = subprocess.Popen([sys.executable, str(BADSERVER), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 30)
        line = proc.stdout.readline() if ready else ""
        assert line.startswith("listening on "), line
        url = line.split("listening on ", 1)[1].strip()
        yield BadServer(base_url=url + "/v1", url=url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def seeds(tmp_path: Path, n: int) -> Path:
    path = tmp_path / "seeds.jsonl"
    path.write_text("".join(json.dumps({"instruction": f"Explain topic number {i} to a student."}) + "\n"
                            for i in range(n)))
    return path


def evolve(server: BadServer | str, seed_file: Path, run_dir: Path, model: str = "good", key: str = KEY,
           epochs: int = 1, concurrency: int = 4, extra: tuple[str, ...] = ()):
    base_url = server if isinstance(server, str) else server.base_url
    args = ["evolve", str(seed_file), "-o", str(run_dir), "--base-url", base_url, "--model", model,
            "--epochs", str(epochs), "--concurrency", str(concurrency), "--max-tokens", "128", *extra]
    return CliRunner().invoke(app, args, env={"OPENAI_API_KEY": key, "COLUMNS": "200"})


def rows(run_dir: Path, name: str = "dataset.jsonl") -> list[dict]:
    return [json.loads(line) for line in (run_dir / name).read_text(encoding="utf-8").splitlines()]


def query(run_dir: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(f"file:{run_dir / 'run.sqlite'}?mode=ro", uri=True) as conn:
        return conn.execute(sql).fetchall()


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


# ------------------------------------------------------------------------------------------ empty output
@pytest.mark.parametrize("mode", ["null-content", "empty-content"])
def test_an_empty_completion_is_not_stored_and_the_rerun_retries_it(tmp_path, bad_server, mode):
    seed_file, run_dir = seeds(tmp_path, 3), tmp_path / "run"
    model = f"{mode}:3"  # the first 3 completions (the 3 seeds' answers) are empty, then good ones
    first = evolve(bad_server, seed_file, run_dir, model=model, extra=("--max-retries", "0"))
    assert first.exit_code == 3, first.output
    assert query(run_dir, "SELECT COUNT(*) FROM calls") == [(0,)]  # nothing empty stored as an answer
    failures = query(run_dir, "SELECT error FROM failures")
    assert len(failures) == 3 and all("empty completion" in e for (e,) in failures), failures
    assert all("empty completion" in r["evidence"]["error"] for r in rows(run_dir, "errors.jsonl"))

    again = evolve(bad_server, seed_file, run_dir, model=model, extra=("--max-retries", "0"))
    assert again.exit_code == 0, again.output
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["seeds_answered"] == 3 and stats["pending_failures"] == 0
    assert all(r["output"].strip() for r in rows(run_dir))
    assert query(run_dir, "SELECT COUNT(*) FROM calls WHERE response = ''") == [(0,)]


def test_an_empty_completion_is_retried_within_the_run_like_a_5xx(tmp_path, bad_server):
    seed_file, run_dir = seeds(tmp_path, 3), tmp_path / "run"
    result = evolve(bad_server, seed_file, run_dir, model="null-content:3", extra=("--max-retries", "2"))
    assert result.exit_code == 0, result.output
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["http"]["openai:null-content:3"]["retry_empty"] == 3
    assert stats["seeds_answered"] == 3 and stats["failed_calls"] == 0


# ------------------------------------------------------------------------------------------ truncation
def test_a_truncated_evolution_is_eliminated_with_evidence(tmp_path, bad_server):
    seed_file, run_dir = seeds(tmp_path, 4), tmp_path / "run"
    result = evolve(bad_server, seed_file, run_dir, model="truncate-evolve")
    assert result.exit_code == 0, result.output
    eliminated = rows(run_dir, "eliminated.jsonl")
    assert len(eliminated) == 4
    for row in eliminated:
        assert row["reason"] == "truncated"
        assert row["evidence"] == {"finish_reason": "length", "purpose": "evolve"}
    assert json.loads((run_dir / "stats.json").read_text())["eliminated"] == {"truncated": 4}
    # No judge and no answer were asked for a truncated evolution.
    assert query(run_dir, "SELECT purpose, COUNT(*) FROM calls GROUP BY purpose ORDER BY purpose") == [
        ("answer", 4), ("evolve", 4)]


def test_a_truncated_answer_is_marked_and_dropped_with_drop_truncated(tmp_path, bad_server):
    seed_file = seeds(tmp_path, 8)
    kept_dir, dropped_dir = tmp_path / "kept", tmp_path / "dropped"
    result = evolve(bad_server, seed_file, kept_dir, model="truncate-answer")
    assert result.exit_code == 0, result.output
    dataset = rows(kept_dir)
    marked = [r for r in dataset if "truncated" in r]
    assert marked and len(marked) < len(dataset)  # the server cuts about half of the answers
    assert all(r["truncated"] is True for r in marked)
    stats = json.loads((kept_dir / "stats.json").read_text())
    assert stats["truncated_answers_kept"] == len(marked)

    result = evolve(bad_server, seed_file, dropped_dir, model="truncate-answer", extra=("--drop-truncated",))
    assert result.exit_code == 0, result.output
    assert not [r for r in rows(dropped_dir) if "truncated" in r]
    eliminated = [r for r in rows(dropped_dir, "eliminated.jsonl") if r["reason"] == "truncated_answer"]
    assert {r["id"] for r in eliminated} == {r["id"] for r in marked}
    assert all(r["evidence"] == {"finish_reason": "length", "purpose": "answer"} for r in eliminated)
    stats = json.loads((dropped_dir / "stats.json").read_text())
    dropped_seeds = sum(1 for r in eliminated if r["epoch"] == 0)
    assert stats.get("seeds_eliminated", {}).get("truncated_answer", 0) == dropped_seeds
    assert stats["eliminated"].get("truncated_answer", 0) == len(eliminated) - dropped_seeds
    assert stats["seed_errors"] == 0
    # Dropping is part of what a run is bound to: the other setting is refused in the same directory.
    refused = evolve(bad_server, seed_file, dropped_dir, model="truncate-answer")
    assert refused.exit_code == 2 and "drop_truncated" in refused.output


# ------------------------------------------------------------------------------------------ fatal errors
def test_a_revoked_key_stops_the_run_at_once_and_a_rerun_with_a_good_key_resumes(tmp_path, bad_server):
    seed_file, run_dir, clean_dir = seeds(tmp_path, 40), tmp_path / "run", tmp_path / "clean"
    revoked = "sk-test-revoked-after-10-SECRET0123456789"
    result = evolve(bad_server, seed_file, run_dir, key=revoked)
    assert result.exit_code == 2, result.output
    lines = error_lines(result.output)
    assert len(lines) == 1 and "HTTP 401" in lines[0], result.output
    assert "Incorrect API key provided: [redacted]." in lines[0]
    assert "rerun" in lines[0]
    assert revoked not in result.output and "SECRET0123456789" not in result.output
    unauthorized = bad_server.status("good", 401)
    assert 1 <= unauthorized <= 4 + 2, bad_server.stats()  # stopped within about one call per slot
    assert bad_server.requests("good") < 20  # 40 seeds x 4 calls would be 160

    # Nothing is marked done wrongly: every stored call is a success, no record is an error, and a chain
    # marked done has all its records.
    stored = query(run_dir, "SELECT COUNT(*) FROM calls")[0][0]
    assert 1 <= stored <= 10
    assert query(run_dir, "SELECT COUNT(*) FROM failures") == [(0,)]
    assert query(run_dir, "SELECT COUNT(*) FROM records WHERE status = 'error'") == [(0,)]
    for (root,) in query(run_dir, "SELECT root_id FROM chains WHERE state = 'done'"):
        assert query(run_dir, f"SELECT COUNT(*) FROM records WHERE root_id = '{root}'") == [(2,)]

    again = evolve(bad_server, seed_file, run_dir)
    assert again.exit_code == 0, again.output
    stats = json.loads((run_dir / "stats.json").read_text())
    assert stats["resumed"] is True and stats["cache_hits"] >= stored
    clean = evolve(bad_server, seed_file, clean_dir)
    assert clean.exit_code == 0, clean.output
    assert (run_dir / "dataset.jsonl").read_bytes() == (clean_dir / "dataset.jsonl").read_bytes()
    assert (run_dir / "eliminated.jsonl").read_bytes() == (clean_dir / "eliminated.jsonl").read_bytes()


def test_a_forbidden_key_stops_the_run(tmp_path, bad_server):
    result = evolve(bad_server, seeds(tmp_path, 20), tmp_path / "run", key="sk-test-forbidden-0123456789")
    assert result.exit_code == 2, result.output
    assert len(error_lines(result.output)) == 1 and "HTTP 403" in result.output
    assert bad_server.requests("good") <= 4 + 2


def test_a_model_the_server_does_not_have_stops_the_run(tmp_path, bad_server):
    run_dir = tmp_path / "run"
    result = evolve(bad_server, seeds(tmp_path, 20), run_dir, model="missing-model")
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert "HTTP 404" in line and "does not exist" in line and "--model" in line
    assert bad_server.requests("missing-model") <= 4 + 2
    assert query(run_dir, "SELECT COUNT(*) FROM calls") == [(0,)]


def test_nothing_listening_stops_after_the_first_calls_all_fail_to_connect(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    started = time.monotonic()
    result = evolve(url, seeds(tmp_path, 60), tmp_path / "run", extra=("--max-retries", "0"))
    assert time.monotonic() - started < 30
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert f"nothing answers at {url}" in line and "first 20 calls" in line


def test_a_failed_call_is_named_in_the_summary(tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    result = evolve(url, seeds(tmp_path, 2), tmp_path / "run", extra=("--max-retries", "0"))
    assert result.exit_code == 3, result.output
    assert f"some calls failed (e.g. cannot connect to {url}" in " ".join(result.output.split())


@pytest.mark.parametrize("url", ["ftp://x", "garbage", "http://", "http://127.0.0.1:notaport/v1"])
def test_an_unusable_url_is_refused_before_the_run_directory_exists(tmp_path, url):
    run_dir = tmp_path / "run"
    result = evolve(url, seeds(tmp_path, 2), run_dir)
    assert result.exit_code == 2, result.output
    [line] = error_lines(result.output)
    assert "http:// or https://" in line
    assert not run_dir.exists()


# ------------------------------------------------------------------------------------------ Retry-After
def test_a_huge_retry_after_waits_the_cap(tmp_path, bad_server):
    seed_file, run_dir = seeds(tmp_path, 4), tmp_path / "run"
    started = time.monotonic()
    result = evolve(bad_server, seed_file, run_dir, model="retry-after-huge", extra=("--max-retry-after", "1"))
    elapsed = time.monotonic() - started
    assert result.exit_code == 0, result.output
    assert elapsed < 30
    stats = json.loads((run_dir / "stats.json").read_text())
    counters = stats["http"]["openai:retry-after-huge"]
    assert counters["retry_after_capped"] == counters["retry_http_429"] == bad_server.status("retry-after-huge", 429)
    assert counters["retry_http_429"] >= 4 * 3  # answer, evolve, judge, answer: each got its 429 once


def test_the_backend_reports_its_longest_wait_for_the_progress_line(bad_server):
    async def go() -> tuple:
        backend = OpenAIBackend(model="retry-after-huge", base_url=bad_server.base_url, max_retry_after=3)
        try:
            task = asyncio.create_task(backend.generate([Request([{"role": "user", "content": "hello"}],
                                                                 Sampling(max_tokens=64))]))
            await asyncio.sleep(0.5)
            during = backend.waiting()
            [result] = await task
            return during, backend.waiting(), result
        finally:
            await backend.aclose()

    during, after, result = asyncio.run(go())
    assert result.ok, result.error
    assert during is not None and during[1] == "429" and 1.5 < during[0] <= 3.0
    assert waiting(during) in ("waiting 2s (429)", "waiting 3s (429)")
    assert after is None and waiting(None) == ""


# ------------------------------------------------------------------------------------------ keys
def test_a_key_echoed_by_the_server_is_never_stored_or_printed(tmp_path, bad_server):
    secret = "sk-proj-ECHOED0123456789abcdefXYZ"
    run_dir = tmp_path / "run"
    seed_file = seeds(tmp_path, 3)
    env = {**os.environ, "OPENAI_API_KEY": secret, "COLUMNS": "200"}

    def args(model: str, out: Path) -> list[str]:
        return [*CLI, "-v", "evolve", str(seed_file), "-o", str(out), "--base-url", bad_server.base_url,
                "--model", model, "--epochs", "1", "--concurrency", "2"]

    proc = subprocess.run(args("echo-key", run_dir), capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 3, proc.stderr
    assert bad_server.status("echo-key", 400) == 3  # the server did echo it, three times
    output = proc.stdout + proc.stderr
    assert secret not in output and "ECHOED0123456789" not in output
    errors = rows(run_dir, "errors.jsonl")
    assert len(errors) == 3 and all("[redacted]" in r["evidence"]["error"] for r in errors)
    for path in run_dir.rglob("*"):
        if path.is_file():
            assert b"ECHOED0123456789" not in path.read_bytes(), path
    # and the fatal path: a 401 body that quotes the key
    revoked = "sk-test-revoked-ECHOED0123456789"
    proc = subprocess.run(args("good", tmp_path / "fatal"), capture_output=True, text=True, timeout=120,
                          env={**env, "OPENAI_API_KEY": revoked})
    assert proc.returncode == 2 and "HTTP 401" in proc.stderr, proc.stderr
    assert "ECHOED0123456789" not in proc.stdout + proc.stderr


def test_redact_masks_the_key_in_use_and_common_key_shapes():
    assert redact("the key mysecretvalue42 leaked", ["mysecretvalue42"]) == "the key [redacted] leaked"
    assert redact("Incorrect API key provided: sk-proj-abcDEF0123456789.") == "Incorrect API key provided: [redacted]."
    assert redact("sk-ant-api03-abcdefghijklmnop") == "[redacted]"
    assert redact("Authorization: Bearer abc.DEF-123") == "Authorization: [redacted]"
    assert redact("GET /v1?api_key=abc123&x=1") == "GET /v1?api_key=[redacted]&x=1"
    assert redact('{"api-key": "abc123"}') == '{"api-key": "[redacted]"}'
    assert redact("HTTP 500: boom", ["not-needed-but-long"]) == "HTTP 500: boom"
    assert redact("", ["x" * 10]) == ""
