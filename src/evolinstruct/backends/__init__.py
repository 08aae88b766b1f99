"""Backends: one async interface, batches of {messages, sampling} in, results in order out."""

from .base import Backend, BackendError, Request, Result, Sampling, make_backend

__all__ = ["Backend", "BackendError", "Request", "Result", "Sampling", "make_backend"]
