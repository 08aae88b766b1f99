"""`evolinstruct serve`."""

from __future__ import annotations

import signal
import threading
from typing import Annotated

import typer

from .console import console, fail


def serve_cmd(
    engine: Annotated[str, typer.Option(help="embedded (our SmolLM2 on CPU, the default), local (a model path or hub id, in-process transformers) or vllm (Ray Serve LLM on GPUs; the [ray-vllm] extra).")] = "embedded",
    model: Annotated[str | None, typer.Option(help="local/vllm: the model path or hub id (embedded: the built-in model).")] = None,
    replicas: Annotated[int, typer.Option(min=1, help="Copies of the model behind the one endpoint.")] = 1,
    cpus_per_replica: Annotated[float, typer.Option(help="embedded/local: CPUs Ray reserves for each replica.")] = 1.0,
    tensor_parallel: Annotated[int, typer.Option(min=1, help="vllm: GPUs per replica (tensor parallelism).")] = 1,
    address: Annotated[str | None, typer.Option(help="Join this Ray cluster (auto, ray://HOST:10001); default: start a local one.")] = None,
    host: Annotated[str, typer.Option(help="Address the endpoint listens on (0.0.0.0 for other machines).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the endpoint.")] = 8000,
) -> None:
    """Serve a model from a fleet of replicas behind one OpenAI-compatible endpoint, on Ray Serve (docs/SCALE.md)."""
    from ..scale.serve import ServeError, start, stop

    def starting() -> None:
        console.print(f"starting {replicas} {engine} replica{'s' if replicas > 1 else ''} on Ray Serve "
                      f"({address or 'a local Ray cluster'}); waiting until they answer...")

    try:
        served = start(engine, model, replicas, cpus_per_replica, tensor_parallel, address, host, port,
                       on_starting=starting)
    except (ServeError, ValueError) as exc:
        fail(str(exc))
    console.print(f"serving [bold]{served.model}[/] at [bold]{served.base_url}[/]", highlight=False, soft_wrap=True)
    console.print(f"  evolinstruct evolve SEEDS -o RUN_DIR --base-url {served.base_url} --model {served.model}",
                  highlight=False, markup=False, soft_wrap=True)
    console.print("Ctrl-C stops it.")
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    console.print("stopping...")
    stop(served)
    console.print("stopped.")
