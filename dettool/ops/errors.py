"""Errors of dettool's custom operators and their ONNX / ONNX Runtime adapters."""
from __future__ import annotations

from dettool.errors import DettoolError


class OpInputError(DettoolError, ValueError):
    """An operator got inputs or attributes outside its specification (docs/custom_ops.md)."""


class UnsupportedOpError(DettoolError):
    """A graph holds an operator, a type or an attribute that dettool cannot export or run."""
