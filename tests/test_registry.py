"""The backend registry and the role resolver: a new backend is one file plus one registry line, an
unknown name is one line naming the choices, and every command fills in a role by the same rules."""

from __future__ import annotations

import asyncio
import json

import pytest

from evolinstruct.evolve.config import Algorithm, EvolveConfig, Roles, SamplingConfig, Source
from evolinstruct.evolve.run import run_evolve
from evolinstruct.models.base import (
    BackendError,
    Capabilities,
    ModelSpec,
    Request,
    Sampling,
    Transport,
    capabilities,
)
from evolinstruct.models.registry import (
    REGISTRY,
    Backends,
    LazyBackend,
    backend_class,
    build,
    check_spec,
    register,
)
from evolinstruct.models.spec import endpoint, is_embedded, resolve_role
from scripted import ScriptedBackend, write_seeds

BUILT_IN = ("local", "openai", "llamacpp", "vllm")


@pytest.fixture
def registered():
    """Whatever a test registers is gone after it."""
    before = dict(REGISTRY)
    yield
    REGISTRY.clear()
    REGISTRY.update(before)


# ---------------------------------------------------------------------------------------- a new backend
def test_a_registered_backend_runs_end_to_end(tmp_path, registered):
    register("scripted", ScriptedBackend)  # the one line; nothing else in the package knows this backend
    log = ScriptedBackend.script.calls  # the default script's log of calls
    before = len(log)
    seeds = write_seeds(tmp_path / "seeds.jsonl", ["Describe the moon.", "Describe tea.", "Describe rivers."])
    config = EvolveConfig(
        source=Source(seeds=seeds), algorithm=Algorithm(epochs=2), sampling=SamplingConfig(max_tokens=32),
        roles=Roles(evolver=ModelSpec(backend="scripted", model="s")), transport=Transport(concurrency=4),
    )
    stats = run_evolve(config, tmp_path / "run")
    assert stats["seeds"] == 3 and stats["evolutions"]["not_attempted"] == 0 and stats["evolutions"]["errors"] == 0
    assert stats["kept"] == 6 and stats["dataset_rows"] == 9
    assert stats["models"] == {"evolver": "s", "responder": "s", "judge": "s"}
    assert stats["llm_calls"] == len(log) - before == 3 + 6 * 3  # seed answers; evolve, judge, answer per child
    assert {c.model for c in log[before:]} == {"s"}
    rows = [json.loads(line) for line in (tmp_path / "run" / "dataset.jsonl").read_text().splitlines()]
    assert len(rows) == 9 and {r["model"] for r in rows} == {"s"}
    assert json.loads((tmp_path / "run" / "stats.json").read_text()) == stats


def test_build_uses_the_classes_from_spec_and_shares_one_backend_per_model(registered):
    register("scripted", ScriptedBackend)
    backend = build(ModelSpec(backend="scripted", model="s"), Transport(concurrency=3))
    assert isinstance(backend, ScriptedBackend) and backend.model == "s" and backend.name == "scripted"
    [result] = asyncio.run(backend.generate([Request([{"role": "user", "content": "Describe tea."}], Sampling())]))
    assert result.ok and len(result.text.split()) == 60
    backends = Backends(Transport())
    one = backends.get(ModelSpec(backend="scripted", model="s"))
    assert backends.get(ModelSpec(backend="scripted", model="s")) is one  # two roles, one model: one backend
    assert backends.get(ModelSpec(backend="scripted", model="t")) is not one
    asyncio.run(backends.aclose())
    assert one.closed
    # A target may also be 'module:Class', imported on first use.
    register("scripted-by-path", "scripted:ScriptedBackend")
    assert backend_class("scripted-by-path") is ScriptedBackend


def test_in_process_backends_are_built_lazily_without_loading():
    lazy = build(ModelSpec(backend="local"), Transport(), lazy=True)
    assert isinstance(lazy, LazyBackend) and lazy.loaded is None
    assert lazy.model == "SmolLM2-135M-Instruct"  # the name calls are stored under, known without loading
    assert not isinstance(build(ModelSpec(backend="openai", model="m", base_url="http://127.0.0.1:9/v1"),
                                Transport(), lazy=True), LazyBackend)


@pytest.mark.parametrize("call", [
    lambda: backend_class("nope"),
    lambda: build(ModelSpec(backend="nope"), Transport()),
    lambda: check_spec(ModelSpec(backend="nope")),
    lambda: Roles(evolver=ModelSpec(backend="nope")),
    lambda: resolve_role("nope", None, None),
])
def test_an_unknown_backend_is_one_line_naming_the_choices(call):
    with pytest.raises(BackendError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message and "unknown backend 'nope'" in message
    for name in BUILT_IN:
        assert name in message


# ---------------------------------------------------------------------------------------- resolving a role
SERVER = ModelSpec(backend="openai", model="llama-8b", base_url="http://127.0.0.1:8000/v1", api_key_env="SERVER_KEY")


def test_a_base_url_without_a_backend_means_openai():
    assert resolve_role(None, "m", "http://127.0.0.1:9/v1") == ModelSpec("openai", "m", "http://127.0.0.1:9/v1")
    assert resolve_role(None, "m", "http://127.0.0.1:9/v1", fallback=ModelSpec()).backend == "openai"
    assert resolve_role(None, "m", None).backend == "local"  # no URL, no fallback: the embedded backend
    assert resolve_role(None, "m", None, fallback=SERVER).backend == "openai"  # no URL: the fallback's backend


def test_model_and_base_url_are_inherited_only_from_the_same_backend():
    assert resolve_role(None, "other", None, fallback=SERVER) == ModelSpec(
        "openai", "other", SERVER.base_url, "SERVER_KEY")
    assert resolve_role("openai", None, "http://127.0.0.1:9/v1", fallback=SERVER) == ModelSpec(
        "openai", "llama-8b", "http://127.0.0.1:9/v1", "SERVER_KEY")
    # Another backend starts afresh: the server's model name means nothing to the local backend.
    assert resolve_role("local", None, None, fallback=SERVER) == ModelSpec("local", None, None, "SERVER_KEY")
    assert resolve_role("llamacpp", None, None, fallback=ModelSpec("local", "HuggingFaceTB/SmolLM2-360M")) == \
        ModelSpec("llamacpp", None, None)


def test_nothing_given_is_the_fallback_or_none_when_inheriting():
    assert resolve_role(None, None, None, fallback=SERVER) == SERVER
    assert resolve_role(None, None, None, "OTHER_KEY", fallback=SERVER) == ModelSpec(
        "openai", "llama-8b", SERVER.base_url, "OTHER_KEY")
    assert resolve_role(None, None, None, fallback=SERVER, inherit=True) is None
    assert resolve_role(None, None, None, inherit=True) is None
    assert resolve_role(None, None, None) == ModelSpec()  # the embedded default


def test_openai_without_a_model_name_is_rejected():
    for call in (lambda **k: resolve_role("openai", None, None, **k),
                 lambda **k: resolve_role(None, None, "http://127.0.0.1:9/v1", **k)):
        with pytest.raises(BackendError, match="needs a model name"):
            call()
        with pytest.raises(BackendError, match=r"^--judge-model: the openai backend needs a model name"):
            call(option="--judge-model")
    with pytest.raises(BackendError, match="needs a model name"):
        Roles(evolver=ModelSpec(backend="openai"))


# ---------------------------------------------------------------------------------------- capabilities
def test_capabilities_say_what_a_backend_can_do():
    local, openai = capabilities(backend_class("local")), capabilities(backend_class("openai"))
    assert local.guides and local.in_process and not local.needs_model
    assert openai.needs_model and not openai.in_process and not openai.guides
    assert capabilities(backend_class("llamacpp")) == Capabilities(in_process=True)
    assert capabilities(backend_class("vllm")) == Capabilities(in_process=True, needs_model=True)
    assert capabilities(ScriptedBackend) == Capabilities()
    assert capabilities(object()) == Capabilities()  # a class that declares nothing can do nothing special


def test_is_embedded_and_endpoint(registered):
    assert is_embedded(ModelSpec()) and is_embedded(ModelSpec("local", "embedded"))
    assert is_embedded(ModelSpec("llamacpp"))
    assert not is_embedded(ModelSpec("local", "HuggingFaceTB/SmolLM2-360M-Instruct"))
    assert not is_embedded(ModelSpec("openai", "embedded", "http://127.0.0.1:9/v1"))  # a served model is not ours
    assert endpoint(ModelSpec()) == "in-process"
    assert endpoint(SERVER) == SERVER.base_url
    assert endpoint(ModelSpec("openai", "gpt-4o-mini")) == "https://api.openai.com/v1"
    register("scripted", ScriptedBackend)
    assert not is_embedded(ModelSpec("scripted"))  # not in-process
    assert endpoint(ModelSpec("scripted", "s")) == "the backend's default endpoint"
