"""Proposals files: round trip, atomic write, and DataError naming the file for bad input."""
from __future__ import annotations

import os

import pytest
import torch

from dettool.data.proposals import load_proposals, save_proposals
from dettool.errors import DataError


def _proposals() -> dict[int, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {1: torch.rand(7, 5, generator=g) * 100, 42: torch.zeros((0, 5)), 3: torch.rand(1, 5, generator=g)}


def test_round_trip(tmp_path):
    props = _proposals()
    path = tmp_path / "sub" / "proposals.pt"
    save_proposals(path, props)
    loaded = load_proposals(path)
    assert sorted(loaded) == sorted(props)
    for image_id, boxes in props.items():
        torch.testing.assert_close(loaded[image_id], boxes)
        assert loaded[image_id].dtype == torch.float32
    assert os.listdir(path.parent) == ["proposals.pt"]  # no temporary file left behind


def test_save_stores_copies_of_views(tmp_path):
    big = torch.rand(10_000, 5)
    save_proposals(tmp_path / "p.pt", {1: big[:2]})
    assert (tmp_path / "p.pt").stat().st_size < 10_000  # not the 200 kB storage behind the view
    torch.testing.assert_close(load_proposals(tmp_path / "p.pt")[1], big[:2])


def test_save_rejects_wrong_shape(tmp_path):
    with pytest.raises(ValueError, match="Tensor\\[K, 5\\]"):
        save_proposals(tmp_path / "p.pt", {1: torch.zeros(3, 4)})
    assert not (tmp_path / "p.pt").exists()


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="nothere.pt: proposals file not found"):
        load_proposals(tmp_path / "nothere.pt")


def test_garbage_file(tmp_path):
    path = tmp_path / "garbage.pt"
    path.write_bytes(os.urandom(512))
    with pytest.raises(DataError, match="garbage.pt: not a readable proposals file"):
        load_proposals(path)


def test_other_torch_file(tmp_path):
    path = tmp_path / "weights.pt"
    torch.save({"model": {"w": torch.zeros(2)}}, path)
    with pytest.raises(DataError, match="weights.pt: not a dettool proposals file"):
        load_proposals(path)


def test_wrong_tensor_shape_in_file(tmp_path):
    path = tmp_path / "bad_shape.pt"
    torch.save({"format": "dettool-proposals", "version": 1, "proposals": {7: torch.zeros(3, 4)}}, path)
    with pytest.raises(DataError, match="bad_shape.pt: image 7: proposals must be Tensor\\[K, 5\\], got \\(3, 4\\)"):
        load_proposals(path)
