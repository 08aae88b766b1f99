"""Which model plays a role: the one resolver that evolve, score and eval all use to fill it in.

A role (the evolver, the answer model, the judge, the model under test...) is a `ModelSpec`. The CLI
gives some of backend / model / base URL per role; `resolve_role` fills in the rest from the role it
falls back to (the run's evolver, for example), with one rule everywhere:

- nothing given: the fallback itself (or None where the caller wants "inherit");
- a base URL without a backend means `openai`; otherwise the fallback's backend, else `local`;
- model and base URL come from the fallback only when the backend is the fallback's.
"""

from __future__ import annotations

from dataclasses import replace

from .base import DEFAULT_KEY_ENV, EMBEDDED, BackendError, EndpointSpec, ModelSpec, capabilities
from .registry import backend_class, check_spec


def is_embedded(spec: ModelSpec) -> bool:
    """The embedded default model, run in-process: small, so callers cap its lengths."""
    return capabilities(backend_class(spec.backend)).in_process and spec.model in (None, "", EMBEDDED)


def endpoint(spec: ModelSpec) -> str:
    """Where a role's calls go, for a command's first line (never the key, only the variable that holds it)."""
    cls = backend_class(spec.backend)
    if capabilities(cls).in_process:
        return "in-process"
    if spec.endpoints:
        return f"{len(spec.endpoints)} endpoints: " + ", ".join(e.url for e in spec.endpoints)
    return spec.base_url or getattr(cls, "default_endpoint", "the backend's default endpoint")


def with_endpoints(spec: ModelSpec, endpoints: tuple[EndpointSpec, ...]) -> ModelSpec:
    """`spec` served by several endpoints (--base-url given more than once, --endpoints FILE), or by one with its
    own bound or model name: the first is its base URL; a backend that cannot use them is refused."""
    if not endpoints:
        return spec
    if len(endpoints) == 1 and endpoints[0].concurrency is None and endpoints[0].model is None:
        return replace(spec, base_url=endpoints[0].url)  # a plain --base-url
    if not hasattr(backend_class(spec.backend), "endpoint_stats"):
        raise BackendError(f"the {spec.backend} backend takes one endpoint; several need an OpenAI-compatible backend")
    spec = replace(spec, base_url=endpoints[0].url, endpoints=tuple(endpoints))
    check_spec(spec)
    return spec


def resolve_role(
    backend: str | None,
    model: str | None,
    base_url: str | None,
    api_key_env: str | None = None,
    fallback: ModelSpec | None = None,
    *,
    inherit: bool = False,
    option: str = "",
) -> ModelSpec | None:
    """A role's spec from what the user gave, filled in from `fallback` (see the module docstring).

    `inherit=True`: nothing given returns None (the role is played by the fallback, as stored in a run).
    `option` prefixes error messages (e.g. "--judge") so they name the flag to fix.
    """
    given = backend is not None or model is not None or base_url is not None
    if not given:
        if inherit:
            return None
        if fallback is not None:
            return fallback if api_key_env is None else replace(fallback, api_key_env=api_key_env)
    name = backend or ("openai" if base_url else (fallback.backend if fallback else "local"))
    same = fallback is not None and fallback.backend == name
    spec = ModelSpec(
        backend=name,
        model=model or (fallback.model if same else None),
        base_url=base_url or (fallback.base_url if same else None),
        api_key_env=api_key_env or (fallback.api_key_env if fallback else DEFAULT_KEY_ENV),
        # A fleet (several endpoints) goes with its base URL: a role that keeps the fallback's URL keeps its fleet.
        endpoints=fallback.endpoints if same and not base_url and fallback is not None else (),
    )
    try:
        check_spec(spec)
    except BackendError as exc:
        raise BackendError(f"{option}: {exc}" if option else str(exc)) from None
    return spec


GUIDES = ("auto", "on", "off")


def guided(choice: str, spec: ModelSpec, option: str, role: str) -> bool:
    """Whether `role`'s requests carry a guide (a regex the answer must open with; models/guide.py).
    auto: when its backend decodes under a guide (in-process: a small model needs it to follow a format at
    all); a served model keeps the published free-text prompts. on: refused for a backend that cannot."""
    if choice not in GUIDES:
        raise ValueError(f"{option} must be one of {', '.join(GUIDES)}, not '{choice}'")
    can = capabilities(backend_class(spec.backend)).guides
    if choice == "on" and not can:
        raise ValueError(f"{option} on needs an in-process {role} whose backend decodes under a guide "
                         f"(such as local); the {role}'s backend is '{spec.backend}'")
    return choice == "on" or (choice == "auto" and can)

