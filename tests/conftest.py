"""Shared fixtures: a real OpenAI-compatible server (llama-cpp-python's) over loopback.

`start_llama_server` launches `python -m llama_cpp.server` on the embedded GGUF (SmolLM2-135M-Instruct)
and waits until `GET /v1/models` answers; `stop_llama_server` ends it. The session fixture
`llama_server` shares one server across the test session; `llama_server_factory` starts extra ones
(for tests that kill and restart a server) and stops whatever is left at teardown. `scripted`
registers the scripted backend (tests/scripted.py) for one test: no model, no server.

A missing llama-cpp-python is a failure, not a skip: `make test` installs it.
"""

from __future__ import annotations

import atexit
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evolinstruct.models.registry import REGISTRY
from scripted import Script, ScriptedBackend

SERVER_MODEL = "smollm2"  # the --model_alias the server answers to
SERVER_START_TIMEOUT = 60.0
SERVER_THREADS = 2
SERVER_CTX = 2048

_started: list[subprocess.Popen] = []  # every server this session launched, for the atexit safety net


@dataclass(frozen=True)
class LlamaServer:
    base_url: str  # http://127.0.0.1:PORT/v1
    model: str
    port: int
    proc: subprocess.Popen
    log_path: Path


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _require_llama_cpp() -> None:
    missing = [
        m
        for m in (
            "llama_cpp",
            "uvicorn",
            "fastapi",
            "sse_starlette",
            "starlette_context",
            "pydantic_settings",
        )
        if importlib.util.find_spec(m) is None
    ]
    if missing:
        pytest.fail(
            f"the server tests need llama-cpp-python with its server extras (missing: {', '.join(missing)}); "
            "`make test` installs them (the prebuilt llama-cpp-python wheel with [server])",
            pytrace=False,
        )


def _gguf() -> Path:
    from evolinstruct.models.embedded import gguf_path

    return gguf_path()


def _log_tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"(no log: {exc})"
    return "\n".join(text.splitlines()[-lines:])


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def stop_llama_server(proc: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the server's process group, SIGKILL it after `grace` seconds. Safe to call twice."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.wait(timeout=grace)
    if proc in _started:
        _started.remove(proc)


@atexit.register
def _stop_leftovers() -> None:
    for proc in list(_started):
        stop_llama_server(proc, grace=3.0)


def launch_llama_server(
    tmp_dir: str | os.PathLike, port: int | None = None, timeout: float = SERVER_START_TIMEOUT
) -> LlamaServer:
    """Start llama-cpp-python's OpenAI-compatible server on 127.0.0.1 and wait until it answers.

    Its stdout/stderr go to `tmp_dir/llama_server-PORT.log`; if it does not come up within `timeout`
    seconds the test fails with the tail of that log. Pass `port` to restart on the same address.
    """
    _require_llama_cpp()
    tmp = Path(tmp_dir)
    tmp.mkdir(parents=True, exist_ok=True)
    model_path = _gguf()
    fixed_port = port is not None
    attempts = 1 if fixed_port else 3  # a picked port can be taken before the server binds it
    failure = ""
    for _ in range(attempts):
        use_port = port if fixed_port else free_port()
        base_url = f"http://127.0.0.1:{use_port}/v1"
        log_path = tmp / f"llama_server-{use_port}.log"
        command = [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(use_port),
            "--model_alias",
            SERVER_MODEL,
            "--n_ctx",
            str(SERVER_CTX),
            "--n_threads",
            str(SERVER_THREADS),
        ]
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        _started.append(proc)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            if _answers(base_url):
                return LlamaServer(base_url, SERVER_MODEL, use_port, proc, log_path)
            time.sleep(0.25)
        code = proc.poll()
        stop_llama_server(proc)
        why = f"exited with status {code}" if code is not None else f"did not answer within {timeout:.0f} s"
        failure = (
            f"llama.cpp server on port {use_port} {why}\ncommand: {' '.join(command)}\n"
            f"log {log_path} (tail):\n{_log_tail(log_path)}"
        )
        if code is None:
            break  # a hung server will not do better on another port
    pytest.fail(failure, pytrace=False)


def start_llama_server(
    tmp_dir: str | os.PathLike, port: int | None = None, timeout: float = SERVER_START_TIMEOUT
) -> tuple[subprocess.Popen, str]:
    """Start a server (see `launch_llama_server`); returns (process, base_url). Stop it with `stop_llama_server`."""
    server = launch_llama_server(tmp_dir, port=port, timeout=timeout)
    return server.proc, server.base_url


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaServer]:
    """One llama.cpp server for the session: `.base_url` (http://127.0.0.1:PORT/v1) and `.model` ("smollm2")."""
    server = launch_llama_server(tmp_path_factory.mktemp("llama_server"))
    try:
        yield server
    finally:
        stop_llama_server(server.proc)


@pytest.fixture
def llama_server_factory(tmp_path: Path) -> Iterator[Callable[..., LlamaServer]]:
    """Start servers on demand (`factory()` or `factory(port=...)`); all are stopped at teardown."""
    servers: list[LlamaServer] = []

    def factory(port: int | None = None, timeout: float = SERVER_START_TIMEOUT) -> LlamaServer:
        server = launch_llama_server(tmp_path, port=port, timeout=timeout)
        servers.append(server)
        return server

    try:
        yield factory
    finally:
        for server in servers:
            stop_llama_server(server.proc)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout: the public seed, eval and prompt files."""
    path = Path(__file__).resolve().parents[2] / "shared" / "data"
    if not path.is_dir():
        pytest.fail(f"{path} is missing: the tests read public data from ../shared/data beside the checkout")
    return path


@pytest.fixture
def scripted(monkeypatch: pytest.MonkeyPatch) -> Callable[..., Script]:
    """Register the scripted backend (tests/scripted.py) under "scripted" for one test, with the given
    rules; returns its `Script` (rules and the log of calls). The registry is restored afterwards."""

    def use(*rules: tuple) -> Script:
        script = Script(list(rules))
        monkeypatch.setitem(REGISTRY, "scripted", ScriptedBackend.using(script))
        return script

    return use


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[None]:
    """One local Ray cluster for every Ray test of the session (2 CPUs, no dashboard; ~5-10 s to start)."""
    try:
        import ray
    except ImportError:
        pytest.fail("the Ray tests need Ray Serve: pip install -e '.[ray]'", pytrace=False)
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        from ray import serve

        serve.shutdown()
        ray.shutdown()


# Fixtures that start a server process: a test that uses one is slow by definition (`make test-fast` runs
# no model, server or browser), whether or not its author remembered the mark.
SERVER_FIXTURES = {"llama_server", "llama_server_factory", "bad_server", "sim_url", "reference", "ray_cluster"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if SERVER_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
