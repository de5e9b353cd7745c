"""Errors of dettool's custom operators and of their ONNX Runtime adapter."""
from __future__ import annotations

from dettool.errors import BackendError, DettoolError


class OpInputError(DettoolError, ValueError):
    """An operator got inputs or attributes outside its specification (docs/custom_ops.md)."""


class UnsupportedOpError(BackendError):
    """A graph holds a dettool node ONNX Runtime cannot run: unknown op, input type, attribute."""
