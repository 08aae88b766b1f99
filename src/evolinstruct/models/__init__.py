"""Models: one async backend contract (batches of {messages, sampling} in, results in order out), a
registry that names the backends, and the one resolver of which model plays which role."""

from .base import (
    Backend,
    BackendError,
    Capabilities,
    ModelSpec,
    Request,
    Result,
    Sampling,
    Transport,
    capabilities,
)
from .registry import Backends, backend_class, backend_names, build, register
from .spec import endpoint, is_embedded, resolve_role, with_endpoints

__all__ = [
    "Backend", "BackendError", "Backends", "Capabilities", "ModelSpec", "Request", "Result", "Sampling", "Transport",
    "backend_class", "backend_names", "build", "capabilities", "endpoint", "is_embedded", "register", "resolve_role",
    "with_endpoints",
]
