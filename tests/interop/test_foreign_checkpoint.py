"""Foreign checkpoints are read with weights_only: MMDetection's training metadata is skipped,
any other pickled class refused by name, broken files reported in one line."""
from __future__ import annotations

import collections
import fractions
import importlib.util
import os
from pathlib import Path

import pytest
import torch

from dettool.errors import CheckpointError
from dettool.interop.checkpoint import read_foreign_checkpoint

WEIGHTS = collections.OrderedDict([("backbone.conv1.weight", torch.randn(4, 3, 3, 3)), ("head.bias", torch.zeros(4))])


def save(obj, tmp_path: Path, name: str = "ckpt.pth") -> Path:
    torch.save(obj, tmp_path / name)
    return tmp_path / name


def assert_weights(ckpt) -> None:
    assert list(ckpt.state_dict) == list(WEIGHTS)
    for k, v in WEIGHTS.items():
        assert torch.equal(ckpt.state_dict[k], v)


@pytest.mark.skipif(importlib.util.find_spec("mmengine") is None, reason="mmengine is not installed")
def test_mmengine_training_checkpoint_keeps_weights_and_plain_metadata(tmp_path: Path) -> None:
    import numpy as np
    from mmengine.logging import MessageHub

    hub = MessageHub.get_instance("test_foreign_checkpoint")
    for i in range(3):
        hub.update_scalar("train/loss", float(i))
    meta = {"epoch": 12, "dataset_meta": {"classes": ("person", "car"), "palette": [(220, 20, 60)]},
            "seed": np.int64(7)}
    ckpt = read_foreign_checkpoint(save({"meta": meta, "state_dict": WEIGHTS, "message_hub": hub.state_dict(),
                                         "optimizer": {"state": {}, "param_groups": [{"lr": 0.02}]}}, tmp_path))
    assert_weights(ckpt)
    assert ckpt.meta == {"epoch": 12, "dataset_meta": {"classes": ("person", "car"), "palette": [(220, 20, 60)]}}
    assert "mmengine.logging.history_buffer.HistoryBuffer" in ckpt.skipped
    assert all(name.startswith(("mmengine.", "numpy.", "builtins.getattr")) for name in ckpt.skipped)


def test_plain_state_dict_as_torchvision_ships_it(tmp_path: Path) -> None:
    ckpt = read_foreign_checkpoint(save(WEIGHTS, tmp_path))
    assert_weights(ckpt)
    assert ckpt.meta == {} and ckpt.skipped == []


class Payload:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_code_in_a_pickle_is_refused_by_name_and_never_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    path = save({"state_dict": WEIGHTS, "meta": {"x": Payload(marker)}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"ckpt.pth: holds a pickled (posix|nt)\.system, which dettool does not"):
        read_foreign_checkpoint(path)
    assert not marker.exists()


def test_foreign_class_is_refused_by_name(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"holds a pickled fractions\.Fraction"):
        read_foreign_checkpoint(save({"state_dict": WEIGHTS, "meta": {"f": fractions.Fraction(1, 3)}}, tmp_path))


def test_skipped_class_among_the_weights_is_refused(tmp_path: Path) -> None:
    import numpy as np

    path = save({"state_dict": {**WEIGHTS, "anchors": np.zeros(3)}}, tmp_path)
    with pytest.raises(CheckpointError, match=r"entry 'anchors' is a pickled numpy\..*, not a tensor"):
        read_foreign_checkpoint(path)


def test_truncated_missing_and_empty_files(tmp_path: Path) -> None:
    data = save({"state_dict": WEIGHTS}, tmp_path).read_bytes()
    for cut in (len(data) // 2, 100, 0):
        (tmp_path / "cut.pth").write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match=r"cut.pth: not a readable PyTorch checkpoint"):
            read_foreign_checkpoint(tmp_path / "cut.pth")
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        read_foreign_checkpoint(tmp_path / "absent.pth")
    with pytest.raises(CheckpointError, match="holds no state dict"):
        read_foreign_checkpoint(save({"meta": {}}, tmp_path, "nostate.pth"))
