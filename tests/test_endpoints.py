"""Many endpoints behind one model (models/endpoints.py): the endpoints file, routing, and a real fleet.

Fast: `--endpoints FILE` parsing (bad lines fail as FILE:LINE), the pool's least-outstanding pick, ejection and
the 429 slow-down. Slow: three bench/simserver.py processes, one killed mid-run and restarted later; the run
completes, its dataset is byte-identical to a one-server run, and the per-endpoint stats show the ejection
and the re-admission.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from evolinstruct.models.base import EndpointSpec
from evolinstruct.models.endpoints import EndpointPool, parse_endpoints_file
from runhelpers import CLI, stored_calls
from simfleet import start_sim, stop_sim, write_seeds


def test_endpoints_file_lines(tmp_path: Path) -> None:
    f = tmp_path / "fleet.txt"
    f.write_text("# the fleet\nhttp://a:8000/v1  concurrency=8 model=m1\n\nhttp://b:8000/v1/ 4\nhttp://c:1/v1\n")
    assert parse_endpoints_file(f) == (EndpointSpec("http://a:8000/v1", 8, "m1"), EndpointSpec("http://b:8000/v1", 4),
                                       EndpointSpec("http://c:1/v1"))


@pytest.mark.parametrize(("text", "line", "why"), [
    ("http://a:1/v1\nftp://b/v1\n", 2, "not usable"),
    ("http://a:1/v1 concurrency=0\n", 1, "whole number"),
    ("\nhttp://a:1/v1 speed=3\n", 2, "unknown field"),
    ("# nothing\n", 1, "no endpoint"),
])
def test_a_bad_endpoints_line_fails_naming_file_and_line(tmp_path: Path, text: str, line: int, why: str) -> None:
    f = tmp_path / "fleet.txt"
    f.write_text(text)
    with pytest.raises(ValueError) as err:
        parse_endpoints_file(f)
    assert str(err.value).startswith(f"{f}:{line}: ") and why in str(err.value)


def test_the_pool_routes_least_outstanding_bounded_and_ejects() -> None:
    async def main() -> None:
        probes: list[str] = []

        async def probe(url: str) -> bool:
            probes.append(url)
            return True

        pool = EndpointPool((EndpointSpec("http://a/v1", 2), EndpointSpec("http://b/v1", 1)), 8, probe)
        a, b = pool.endpoints
        picks = [await pool.acquire() for _ in range(3)]
        assert [p.url for p in picks] == ["http://a/v1", "http://b/v1", "http://a/v1"]  # relative load, bounded
        with pytest.raises(asyncio.TimeoutError):  # both at their bound: the next waits
            await asyncio.wait_for(pool.acquire(), 0.1)
        pool.release(a, "ok", 0.1, 3, 4)
        assert pool.release(b, "connect") is True and not b.up  # refused: ejected at once
        assert (await pool.acquire()) is a  # only a takes requests now
        await asyncio.sleep(0.7)  # the probe (first after 0.5 s) finds b back
        assert b.up and b.readmissions == 1 and probes == ["http://b/v1"]
        pool.release(a, "429", retry_after=5)  # a 429 slows a only
        pool.release(a, "ok")
        assert (await pool.acquire()) is b
        assert a.stats()["calls"] == 2 and b.stats()["ejections"] == 1
        await pool.aclose()

    asyncio.run(main())



def test_a_fully_ejected_fleet_still_bounds_each_endpoint() -> None:
    async def main() -> None:
        async def probe(url: str) -> bool:
            return False

        pool = EndpointPool((EndpointSpec("http://a/v1", 1), EndpointSpec("http://b/v1", 1)), 8, probe)
        a, b = pool.endpoints
        first, second = await pool.acquire(), await pool.acquire()
        pool.release(first, "connect")
        pool.release(second, "connect")
        assert pool.up == 0
        picks = [await pool.acquire(), await pool.acquire()]  # the dead fleet still takes requests, one each
        assert sorted(p.url for p in picks) == ["http://a/v1", "http://b/v1"]
        with pytest.raises(asyncio.TimeoutError):  # both at their bound: the next waits, ejected or not
            await asyncio.wait_for(pool.acquire(), 0.1)
        assert a.outstanding == 1 and b.outstanding == 1
        await pool.aclose()

    asyncio.run(main())


def test_an_endpoint_readmitted_by_a_request_then_ejected_again_has_one_probe() -> None:
    async def main() -> None:
        back = False

        async def probe(url: str) -> bool:
            await asyncio.sleep(0.05)  # a real probe is a request: two of them can be out at once
            return back and url == "http://a/v1"

        pool = EndpointPool((EndpointSpec("http://a/v1", 2), EndpointSpec("http://b/v1", 2)), 8, probe)
        a, b = pool.endpoints
        for e in (a, b):
            assert (await pool.acquire()) is e
            pool.release(e, "connect")
        assert pool.up == 0
        assert (await pool.acquire()) is a  # the whole fleet is out: a (ejected first) is tried, and answers
        pool.release(a, "ok", 0.1)
        assert a.up and a.readmissions == 1
        assert (await pool.acquire()) is a
        pool.release(a, "connect")  # out again, before its first probe woke
        assert not a.up and a.ejections == 2
        back = True
        await asyncio.sleep(0.8)
        assert a.up and a.readmissions == 2  # one probe re-admitted it once
        assert len(pool._probes) == 1  # only b's probe still watches
        await pool.aclose()

    asyncio.run(main())

def _evolve(seeds: Path, run: Path, urls: list[str]) -> list[str]:
    return [*CLI, "evolve", str(seeds), "-o", str(run), "--model", "sim", "--epochs", "2", "--concurrency", "24",
            *[a for u in urls for a in ("--base-url", u)]]


@pytest.mark.slow
def test_three_endpoints_one_killed_and_restarted(tmp_path: Path) -> None:
    seeds = write_seeds(tmp_path / "seeds.jsonl", 150)  # enough calls left after the restart for the probe to see it
    sims = [start_sim(latency=0.1) for _ in range(3)]
    try:
        urls = [s.url for s in sims]
        ref = tmp_path / "ref"
        done = subprocess.run(_evolve(seeds, ref, urls[:1]), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        run = tmp_path / "fleet"
        proc = subprocess.Popen(_evolve(seeds, run, urls), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env={**os.environ, "COLUMNS": "250"})
        while stored_calls(run) < 60:
            assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        port = sims[1].port
        stop_sim(sims[1], sig=signal.SIGKILL)  # in-flight calls there are cut off: retried on the others
        killed_at = stored_calls(run)
        while stored_calls(run) < killed_at + 60:
            assert proc.poll() is None, proc.stderr.read()[-2000:] if proc.stderr else ""
            time.sleep(0.05)
        sims[1] = start_sim(port=port, latency=0.1)  # back on the same address: the probe re-admits it
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err[-2000:]
        assert "endpoints 3/3 up" in err  # the progress line's last state
        assert (run / "dataset.jsonl").read_bytes() == (ref / "dataset.jsonl").read_bytes()
        stats = json.loads((run / "stats.json").read_text())
        assert stats["pending_failures"] == 0 and stats["evolutions"]["errors"] == 0
        back = stats["endpoints"][urls[1]]
        assert back["ejections"] >= 1 and back["readmissions"] >= 1 and back["up"], back
        assert all(stats["endpoints"][u]["calls"] > 0 for u in urls)
        assert sum(e["calls"] for e in stats["endpoints"].values()) == stats["llm_calls"]
    finally:
        for sim in sims:
            stop_sim(sim)


@pytest.mark.slow
def test_a_429_slows_only_its_endpoint_and_the_endpoints_file_names_models(tmp_path: Path) -> None:
    """tests/badserver.py answers each request's first attempt with 429 and Retry-After 100000 (capped at
    --max-retry-after 60 s): that endpoint alone is slowed, its requests move to the other at once, and the run
    ends in seconds with the dataset of a run against the simulation server alone (the model is named per line)."""
    import select
    import sys

    bad = subprocess.Popen([sys.executable, str(Path(__file__).with_name("badserver.py")), "--port", "0"],
                           stdout=subprocess.PIPE, text=True, start_new_session=True)
    sim = start_sim(latency=0.05)
    try:
        assert bad.stdout is not None
        ready, _, _ = select.select([bad.stdout], [], [], 30)
        bad_url = (bad.stdout.readline() if ready else "").split("listening on ", 1)[-1].strip() + "/v1"
        seeds = write_seeds(tmp_path / "seeds.jsonl", 20)
        ref, alone = tmp_path / "ref", tmp_path / "alone.txt"
        alone.write_text(f"{sim.url} model=sim\n")  # one endpoint that names the model its own way
        cmd = [a if a != "sim" else "fleet-model" for a in _evolve(seeds, ref, [])] + ["--endpoints", str(alone)]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        fleet = tmp_path / "fleet.txt"
        fleet.write_text(f"{bad_url} concurrency=8 model=retry-after-huge\n{sim.url} model=sim\n")
        run = tmp_path / "run"
        cmd = [a if a != "sim" else "fleet-model" for a in _evolve(seeds, run, [])] + ["--endpoints", str(fleet)]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        assert time.monotonic() - started < 45  # no request waited out the 60 s Retry-After
        stats = json.loads((run / "stats.json").read_text())
        slowed, other = stats["endpoints"][bad_url], stats["endpoints"][sim.url]
        assert slowed["calls"] == 0 and slowed["failures_by_reason"].get("429", 0) >= 1 and slowed["ejections"] == 0
        assert other["calls"] == stats["llm_calls"]
        # Calls are keyed by --model, never by the endpoint or the name it serves the model under.
        assert (run / "dataset.jsonl").read_bytes() == (ref / "dataset.jsonl").read_bytes()
    finally:
        stop_sim(sim)
        bad.terminate()
        bad.wait(timeout=10)


@pytest.mark.parametrize(("extra", "why"), [
    (["--endpoints", "FLEET"], "fleet.txt:2: "),
    (["--base-url", "http://a:1/v1", "--base-url", "http://b:1/v1", "--batch", "openai"], "--batch submits provider"),
    (["--base-url", "http://a:1/v1", "--base-url", "http://b:1/v1", "--backend", "local"], "takes one endpoint"),
])
def test_the_cli_refuses_a_bad_fleet_in_one_line_before_the_run_dir(tmp_path: Path, extra: list[str], why: str) -> None:
    from typer.testing import CliRunner

    from evolinstruct.cli import app

    fleet = tmp_path / "fleet.txt"
    fleet.write_text("http://a:1/v1\nhttp://b:1/v1 weight=2\n")
    args = ["evolve", "seeds.jsonl", "-o", str(tmp_path / "run"), "--model", "m",
            *[str(fleet) if a == "FLEET" else a for a in extra]]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2 and len(errors) == 1 and why in errors[0], result.output
    assert not (tmp_path / "run").exists()
