"""Shared fixtures: a tiny synthetic dataset and a tiny config built on it."""
from __future__ import annotations

from pathlib import Path

import pytest

from dettool.data.synth import generate, write_semantic_maps


@pytest.fixture(scope="session")
def tiny_synth(tmp_path_factory) -> Path:
    """A 16-train / 6-val synthetic COCO dataset with its semantic label maps (generated once per
    session)."""
    root = tmp_path_factory.mktemp("synth")
    generate(root, num_train=16, num_val=6, seed=3)
    write_semantic_maps(root, "train", 16, seed=3)
    write_semantic_maps(root, "val", 6, seed=3)
    return root
