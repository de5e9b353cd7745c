"""A tiny Mask R-CNN exported once per session (custom-op and portable ONNX, dynamic batch).

Tracing a deploy graph with ``torch.onnx.export(dynamo=True)`` takes one to two minutes on a
loaded 2-core CPU whatever the model size, so the tests that need these files are marked
``slow`` and share this session fixture. The custom-op graph is written through the
``dettool export`` command (in-process), which is that command's end-to-end test.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from detector_helpers import run_cli
from runtime_helpers import MASK_RCNN, random_detector, tiny_sets

from dettool.config import load_config


@dataclass(frozen=True)
class TinyExport:
    """Files of the session's tiny Mask R-CNN: checkpoint, custom-op and portable ONNX graphs."""

    sets: tuple[str, ...]
    checkpoint: Path
    custom: Path
    portable: Path
    export_stdout: str

    def cfg(self, *extra: str):
        return load_config(MASK_RCNN, [*self.sets, *extra])


@pytest.fixture(scope="session")
def tiny_export(tiny_synth, tmp_path_factory) -> TinyExport:
    from dettool.exporters.torch2onnx import export_onnx

    root = tmp_path_factory.mktemp("tiny_export")
    sets = tuple(tiny_sets(tiny_synth))
    cfg = load_config(MASK_RCNN, list(sets))
    checkpoint = root / "tiny_mask.pth"
    torch.save({"model": random_detector(cfg).state_dict(), "meta": {}}, checkpoint)
    custom = root / "tiny_mask.onnx"
    code, stdout, stderr = run_cli(["export", MASK_RCNN, checkpoint, "--to", "onnx", "--dynamic-batch", "--out", custom,
                                    *[a for s in sets for a in ("--set", s)]])
    assert code == 0, stdout + stderr
    portable, _ = export_onnx(cfg, checkpoint, root / "tiny_mask_portable.onnx", portable=True, dynamic_batch=True)
    return TinyExport(sets, checkpoint, custom, portable, stdout)


@pytest.fixture(scope="session")
def dettool_cli():
    """``run_cli``: ``dettool ARGS`` in-process -> (exit status, stdout, stderr)."""
    return run_cli
