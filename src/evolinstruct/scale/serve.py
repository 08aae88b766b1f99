"""`evolinstruct serve`: a replica fleet behind one OpenAI-compatible endpoint, on Ray Serve.

- `embedded` / `local`: a Ray Serve deployment wrapping our in-process backend (models/local.py: the embedded
  SmolLM2 by default, or a model path / hub id), `replicas` copies with `cpus_per_replica` CPUs each. It
  answers POST /v1/chat/completions (messages, temperature, top_p, max_tokens, seed) and GET /v1/models in
  OpenAI's shapes. This is what tests and CPU users run.
- `vllm`: Ray Serve LLM (`ray.serve.llm.LLMConfig` + `build_openai_app`), vLLM engines on GPUs with
  `tensor_parallel` GPUs per replica. Needs the `[ray-vllm]` extra and GPUs; not exercised by the CPU tests.

Ray Serve's proxy routes each request to a replica (power of two choices on queue length); our client sees one
URL. The run's determinism is unaffected: requests carry their own seed, whichever replica answers.
"""

# No `from __future__ import annotations`: FastAPI reads the handlers' annotations, which name classes
# imported inside embedded_app.
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

ENGINES = ("embedded", "local", "vllm")
APP_NAME = "evolinstruct"
HEALTH_TIMEOUT = 600.0  # seconds to wait for every replica to load its model and answer


class ServeError(RuntimeError):
    """Serving cannot start (no Ray, a bad option, replicas that never came up): one line saying what to do."""


@dataclass(frozen=True)
class Served:
    base_url: str  # http://HOST:PORT/v1
    model: str  # the name to pass as --model
    started_ray: bool  # this process started the Ray cluster (and stops it)


def _ray() -> Any:
    try:
        import ray
        from ray import serve  # noqa: F401 - the serve extra is what is missing when this fails
    except ImportError as exc:
        raise ServeError(f"serving needs Ray Serve: pip install 'evolinstruct[ray]' ({exc})") from None
    return ray


def embedded_app(model: str | None, replicas: int, cpus_per_replica: float, max_ongoing: int = 32) -> tuple[Any, str]:
    """The Ray Serve application of our in-process backend, and the model name it answers to."""
    from fastapi import FastAPI
    from fastapi import Request as HTTPRequest
    from fastapi.responses import JSONResponse
    from ray import serve

    from ..models.base import ModelSpec, Transport
    from ..models.registry import backend_class

    spec = ModelSpec(backend="local", model=model)
    name = backend_class(spec.backend).display_name(model)
    api = FastAPI()

    @serve.deployment(name="chat", num_replicas=replicas, max_ongoing_requests=max_ongoing,
                      ray_actor_options={"num_cpus": cpus_per_replica})
    @serve.ingress(api)
    class Chat:
        """One replica: one copy of the model, batching the requests it holds (models/local.py)."""

        def __init__(self) -> None:
            from evolinstruct.models.registry import build

            self.backend = build(spec, Transport(concurrency=max_ongoing))
            self.served = 0

        @api.get("/v1/models")
        async def models(self) -> dict[str, Any]:
            return {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "evolinstruct"}]}

        @api.get("/health")
        async def health(self) -> dict[str, str]:
            return {"status": "ok"}

        @api.post("/v1/chat/completions")
        async def chat(self, http: HTTPRequest) -> Any:
            from evolinstruct.models.base import Request, Sampling

            try:
                body = await http.json()
                sampling = Sampling(temperature=float(body.get("temperature", 1.0)), top_p=float(body.get("top_p", 1.0)),
                                    max_tokens=int(body.get("max_tokens") or 512), seed=body.get("seed"))
                request = Request(messages=list(body["messages"]), sampling=sampling)
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                return JSONResponse({"error": {"message": f"bad request: {exc}", "type": "invalid_request_error"}}, 400)
            if body.get("model") not in (None, name):
                return JSONResponse({"error": {"message": f"model '{body.get('model')}' not found; this server "
                                               f"serves '{name}'", "code": "model_not_found"}}, 404)
            result = (await self.backend.generate([request]))[0]
            if not result.ok:
                return JSONResponse({"error": {"message": result.error, "type": "server_error"}}, 500)
            self.served += 1
            return {
                "id": f"chatcmpl-{time.time_ns():x}", "object": "chat.completion", "created": int(time.time()),
                "model": name,
                "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                             "finish_reason": result.finish_reason or "stop"}],
                "usage": {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                          "total_tokens": result.prompt_tokens + result.completion_tokens},
            }

    return Chat.bind(), name


def vllm_app(model: str, replicas: int, tensor_parallel: int) -> tuple[Any, str]:
    """Ray Serve LLM's OpenAI app over vLLM engines (GPUs). Not run by the CPU tests: see docs/SCALE.md."""
    try:
        from ray.serve.llm import LLMConfig, build_openai_app
    except ImportError as exc:
        raise ServeError(f"--engine vllm needs Ray Serve LLM and vLLM: pip install 'evolinstruct[ray-vllm]' ({exc})") from None
    config = LLMConfig(
        model_loading_config={"model_id": model, "model_source": model},
        deployment_config={"autoscaling_config": {"min_replicas": replicas, "max_replicas": replicas}},
        engine_kwargs={"tensor_parallel_size": tensor_parallel},
    )
    return build_openai_app({"llm_configs": [config]}), model


def start(engine: str, model: str | None = None, replicas: int = 1, cpus_per_replica: float = 1.0,
          tensor_parallel: int = 1, address: str | None = None, host: str = "127.0.0.1", port: int = 8000,
          health_timeout: float = HEALTH_TIMEOUT, on_starting: Callable[[], None] | None = None) -> Served:
    """Deploy the fleet and wait until it answers; joins the Ray cluster at `address` (auto, ray://...) or the
    one this process already has, else starts a local one. `on_starting()` is called once the options and the
    engine are good, just before Ray is started or joined (the CLI's "starting..." line, never before an error)."""
    if engine not in ENGINES:
        raise ServeError(f"--engine must be one of {', '.join(ENGINES)}, not '{engine}'")
    if replicas < 1 or tensor_parallel < 1 or cpus_per_replica <= 0:
        raise ServeError("--replicas and --tensor-parallel must be 1 or more, --cpus-per-replica more than 0")
    if engine == "vllm" and not model:
        raise ServeError("--engine vllm needs --model (a hub id or a path)")
    ray = _ray()
    from ray import serve

    # The application first: a missing engine fails before a cluster is started or joined.
    if engine == "vllm":
        app, name = vllm_app(model or "", replicas, tensor_parallel)
    else:
        app, name = embedded_app(model if engine == "local" else None, replicas, cpus_per_replica)
    if on_starting is not None:
        on_starting()
    started = False
    if not ray.is_initialized():
        ray.init(address=address, include_dashboard=False, log_to_driver=False)
        started = address is None
    serve.start(http_options={"host": host, "port": port})
    serve.run(app, name=APP_NAME, route_prefix="/", blocking=False)
    base_url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}/v1"
    wait_healthy(base_url, health_timeout)
    return Served(base_url=base_url, model=name, started_ray=started)


def wait_healthy(base_url: str, timeout: float) -> None:
    """Until GET /v1/models answers 200 (the proxy routes and a replica is up)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{base_url}/models", timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError, ValueError):
            pass
        if time.monotonic() > deadline:
            raise ServeError(f"{base_url} did not answer within {timeout:.0f} s (see `ray status` and the Serve logs)")
        time.sleep(0.5)


def stop(served: Served | None = None) -> None:
    """Remove the application; stop Ray too when this process started it."""
    ray = _ray()
    from ray import serve

    if ray.is_initialized():
        serve.shutdown()
        if served is not None and served.started_ray:
            ray.shutdown()
