"""Image scales in the MMDetection paper's notation, and the keep-ratio size they give.

``1333x800`` resizes so that the long side is at most 1333 and the short side at most 800, keeping
the aspect ratio. ``1333x[640:800:32]`` (value mode) draws the short-side limit from
{640, 672, ..., 800}; ``1333x[640:800]`` (range mode) draws it uniformly from the interval.
Without keep-ratio (``data.keep_ratio: false``, SSD) a single-scale ``WxH`` is the exact output
size, width first (``300x300``, ``512x320``); the multi-scale modes need keep-ratio.

This module is light (no torch) so that the config schema can check scales when a file is read.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np

from dettool.errors import ConfigError

_SCALE_RE = re.compile(r"^\s*(\d+)\s*x\s*(?:(\d+)|\[\s*(\d+)\s*:\s*(\d+)\s*(?::\s*(\d+)\s*)?\])\s*$")


@dataclass(frozen=True)
class ScaleSpec:
    """Parsed scale: ``mode`` none -> ``shorts == (s,)``; value -> the set; range -> (lo, hi)."""

    long: int
    shorts: tuple[int, ...]
    mode: Literal["none", "value", "range"]

    @classmethod
    def from_text(cls, text: str) -> "ScaleSpec":
        """Parse ``text``; ``ValueError`` says what is wrong with it (without a config key)."""
        m = _SCALE_RE.match(str(text))
        if not m:
            raise ValueError(f"{text!r} is not a scale like 1333x800, 1333x[640:800:32] or 1333x[640:800]")
        long = int(m.group(1))
        if long < 1 or any(g is not None and int(g) < 1 for g in m.group(2, 3, 4)):
            raise ValueError(f"{text!r}: sizes must be positive")
        if m.group(2):
            return cls(long, (int(m.group(2)),), "none")
        lo, hi, step = int(m.group(3)), int(m.group(4)), m.group(5)
        if lo > hi:
            raise ValueError(f"{text!r}: lower bound {lo} is above upper bound {hi}")
        if step is not None:
            if int(step) <= 0:
                raise ValueError(f"{text!r}: step must be positive")
            return cls(long, tuple(range(lo, hi + 1, int(step))), "value")
        return cls(long, (lo, hi), "range")

    @classmethod
    def parse(cls, text: str, key: str = "scale") -> "ScaleSpec":
        """Parse ``text``; a ``ConfigError`` names ``key`` (``data.train_scale``) when it is malformed."""
        try:
            return cls.from_text(text)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None

    def sample(self, rng: np.random.Generator) -> tuple[int, int]:
        """Draw one (long, short) limit pair (single scale draws nothing from ``rng``)."""
        if self.mode == "none":
            return self.long, self.shorts[0]
        if self.mode == "value":
            return self.long, int(self.shorts[int(rng.integers(len(self.shorts)))])
        return self.long, int(rng.integers(self.shorts[0], self.shorts[1] + 1))

    def exact_size(self) -> tuple[int, int]:
        """``(width, height)`` of ``WxH`` read as an exact size (keep-ratio off); single scale only."""
        if self.mode != "none":
            raise ValueError(f"a {self.mode}-mode multi-scale is not an exact size (it needs keep-ratio)")
        return self.long, self.shorts[0]


def rescale_size(w: int, h: int, long: int, short: int) -> tuple[int, int, float]:
    """Keep-ratio target size: the largest (new_w, new_h) with long side <= long, short <= short."""
    factor = min(long / max(h, w), short / min(h, w))
    return int(w * factor + 0.5), int(h * factor + 0.5), factor
