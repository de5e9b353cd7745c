"""Tiny configs for the runtime tests (imported by conftest.py and tests)."""
from __future__ import annotations

from pathlib import Path

from detector_helpers import CONFIGS, random_detector  # noqa: F401  (re-exported)
from detector_helpers import tiny_sets as base_sets

MASK_RCNN = CONFIGS / "mask_rcnn_r18_fpn_synth.yaml"
FASTER_RCNN = CONFIGS / "faster_rcnn_r18_fpn_synth.yaml"


def tiny_sets(root: Path, *extra: str) -> list[str]:
    """The tiny two-stage overrides, with 200 test proposals per image."""
    return base_sets(root, "model.rpn_head.test_proposals.max_per_img=200", *extra)
