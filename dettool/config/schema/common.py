"""What every config section shares: value ranges checked on construction, and the error they raise.

A field annotated ``Annotated[int, Range(min=1)]`` (aliases below) is checked whenever its
section is built, from YAML or in code; a section with checks across fields raises
:class:`Invalid` from ``__post_init__``. The loader turns ``Invalid`` into a ``ConfigError``
naming the file and the dotted key.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Union


class Invalid(ValueError):
    """A value out of its range; ``key`` is relative to the section (``batch_size``, ``strides[2]``)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(f"{key}: {message}")
        self.key = key
        self.message = message


@dataclass(frozen=True)
class Range:
    """Allowed interval of a number; ``None`` leaves that side open."""

    min: float | None = None
    max: float | None = None
    min_inclusive: bool = True
    max_inclusive: bool = True

    def describe(self) -> str:
        lo = None if self.min is None else f"{'>=' if self.min_inclusive else '>'} {self.min:g}"
        hi = None if self.max is None else f"{'<=' if self.max_inclusive else '<'} {self.max:g}"
        return " and ".join(p for p in (lo, hi) if p)

    def contains(self, value: float) -> bool:
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.min is not None and (value < self.min or (value == self.min and not self.min_inclusive)):
            return False
        if self.max is not None and (value > self.max or (value == self.max and not self.max_inclusive)):
            return False
        return True


PosInt = Annotated[int, Range(min=1)]
NonNegInt = Annotated[int, Range(min=0)]
PosFloat = Annotated[float, Range(min=0, min_inclusive=False)]
NonNegFloat = Annotated[float, Range(min=0)]
Fraction = Annotated[float, Range(0, 1)]  # a probability, ratio or IoU threshold in [0, 1]


def _check(tp: Any, value: Any, key: str) -> None:
    """Check ``value`` against the ranges in ``tp`` (recursing into tuples and optionals)."""
    origin = typing.get_origin(tp)
    if origin is Annotated:
        inner, *extras = typing.get_args(tp)
        for extra in extras:
            if isinstance(extra, Range) and isinstance(value, (int, float)) and not extra.contains(value):
                raise Invalid(key, f"must be {extra.describe()}, got {value!r}")
        _check(inner, value, key)
    elif origin in (Union, types.UnionType):
        if value is not None:
            for option in typing.get_args(tp):
                if _matches(option, value):
                    _check(option, value, key)
                    return
    elif origin is tuple and isinstance(value, tuple):
        args = typing.get_args(tp)
        if len(args) == 2 and args[1] is Ellipsis:
            args = (args[0],) * len(value)
        for i, (a, v) in enumerate(zip(args, value)):
            _check(a, v, f"{key}[{i}]")


def _matches(tp: Any, value: Any) -> bool:
    base = typing.get_origin(tp) or tp
    if base is Annotated:
        return _matches(typing.get_args(tp)[0], value)
    return isinstance(base, type) and isinstance(value, base)


@functools.cache
def annotated_hints(cls: type) -> dict[str, Any]:
    """Field types of a config class with their ``Annotated`` ranges kept."""
    return typing.get_type_hints(cls, include_extras=True)


@dataclass(frozen=True)
class Section:
    """Base of every config section: checks the ``Range`` of each annotated field when built."""

    def __post_init__(self) -> None:
        hints = annotated_hints(type(self))
        for f in dataclasses.fields(self):
            _check(hints[f.name], getattr(self, f.name), f.name)


def require(condition: bool, key: str, message: str) -> None:
    """Raise :class:`Invalid` for ``key`` unless ``condition`` (checks across fields)."""
    if not condition:
        raise Invalid(key, message)
