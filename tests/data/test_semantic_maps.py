"""Semantic label maps (Hybrid Task Cascade's semantic branch): the synthetic generator writes them
without changing the images, the dataset reads them, and every transform moves them with the image."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_synth_options import DEFAULT_DIGEST, tree_digest

from dettool.config import load_config
from dettool.data.coco import CocoDetection
from dettool.data.geometric import Expand, MinIoURandomCrop, RandomFlip, Resize
from dettool.data.photometric import Normalize
from dettool.data.pipeline import Pipeline
from dettool.data.sample import IGNORE_LABEL, Sample
from dettool.data.scale import ScaleSpec
from dettool.data.synth import STUFF_LABELS, generate, image_file_name, semantic_dir, write_semantic_maps
from dettool.errors import ConfigError, DataError
from dettool.trainer.builder.data import build_dataset, ensure_synthetic

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def synth_with_maps(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    generate(root, num_train=6, num_val=2, seed=0)
    write_semantic_maps(root, "train", 6, seed=0)
    write_semantic_maps(root, "val", 2, seed=0)
    return root


def test_maps_leave_the_images_as_they_were(tmp_path):
    generate(tmp_path, num_train=3, num_val=2, seed=0)
    write_semantic_maps(tmp_path, "train", 3, seed=0)
    maps = sorted(p.name for p in semantic_dir(tmp_path, "train").iterdir())
    assert maps == ["000000.png", "000001.png", "000002.png"]
    for p in semantic_dir(tmp_path, "train").iterdir():
        p.unlink()
    semantic_dir(tmp_path, "train").rmdir()
    semantic_dir(tmp_path, "train").parent.rmdir()
    assert tree_digest(tmp_path) == DEFAULT_DIGEST


def test_objects_carry_their_shape_and_the_background_its_stuff(synth_with_maps):
    ann = json.loads((synth_with_maps / "annotations/train.json").read_text())
    ds = CocoDetection(synth_with_maps / "annotations/train.json", synth_with_maps / "train", Pipeline([]),
                       with_masks=True, semantic_dir=semantic_dir(synth_with_maps, "train"))
    checked = 0
    for index, image_id in enumerate(ds.image_ids):
        info = ds.coco.imgs[image_id]
        labels = ds.semantic_map(info["file_name"], info["height"], info["width"])
        masks = ds.instance_masks(image_id, info["height"], info["width"]).bool()
        _, cls, _ = ds.annotations(image_id)
        for m, c in zip(masks, cls):
            assert bool((labels[m] == len(STUFF_LABELS) + c).all())
            checked += 1
        background = ~masks.any(0) if len(masks) else torch.ones_like(labels, dtype=torch.bool)
        stuff = labels[background]
        assert set(stuff.unique().tolist()) == {0, 1}  # both halves of the stripe wave appear
    assert checked == sum(1 for a in ann["annotations"] if not a["iscrowd"])


def test_transforms_move_the_map_with_the_masks(synth_with_maps):
    """After flip, expand and crop (exact moves) each object's pixels still carry its label; the
    expanded canvas is IGNORE_LABEL; a resize keeps the labels (nearest) and the size."""
    ds = CocoDetection(synth_with_maps / "annotations/train.json", synth_with_maps / "train",
                       Pipeline([RandomFlip(1.0), Expand(mean=(0, 0, 0), ratio_range=(1.5, 2.0), prob=1.0),
                                 MinIoURandomCrop(min_ious=(0.1,), min_crop_size=0.5, bbox_clip_border=True),
                                 Resize(ScaleSpec.parse("160x120", "s"), keep_ratio=True),
                                 Normalize((0.0, 0.0, 0.0), (1.0, 1.0, 1.0))]),
                       with_masks=True, semantic_dir=semantic_dir(synth_with_maps, "train"))
    for index in range(len(ds)):
        img, target, meta = ds[(index, 3)]
        labels, masks = target["semantic"], target["masks"].bool()
        assert labels.shape == img.shape[1:] == masks.shape[1:]
        assert set(labels.unique().tolist()) <= {0, 1, 2, 3, 4, 5, IGNORE_LABEL}
        for m, c in zip(masks, target["labels"]):
            # resizing masks (bilinear) and the map (nearest) may disagree on border pixels only
            assert float((labels[m] == 2 + c).float().mean()) > 0.8


def test_expand_fills_ignore_and_flip_mirrors():
    labels = torch.tensor([[0, 1, 2], [3, 4, 5]], dtype=torch.uint8)
    sample = Sample(img=np.zeros((2, 3, 3), np.uint8), boxes=torch.zeros((0, 4)), labels=torch.zeros(0).long(),
                    ignore_boxes=torch.zeros((0, 4)), semantic=labels.clone())
    RandomFlip(1.0)(sample, np.random.default_rng(0))
    assert sample.semantic.tolist() == [[2, 1, 0], [5, 4, 3]]
    Expand(mean=(0, 0, 0), ratio_range=(3.0, 3.0), prob=1.0)(sample, np.random.default_rng(0))
    assert sample.semantic.shape == (6, 9)
    assert int((sample.semantic != IGNORE_LABEL).sum()) == 6


def test_missing_or_bad_maps_are_named(synth_with_maps, tmp_path):
    ds = CocoDetection(synth_with_maps / "annotations/train.json", synth_with_maps / "train", Pipeline([]),
                       semantic_dir=tmp_path)
    with pytest.raises(DataError, match=r"000000\.png: semantic label map not found"):
        ds.semantic_map("000000.jpg", 10, 10)
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "000000.png")
    with pytest.raises(DataError, match="label map is 5x4, its image 10x10"):
        ds.semantic_map("000000.jpg", 10, 10)
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "000001.png")
    with pytest.raises(DataError, match="8-bit single-channel"):
        ds.semantic_map("000001.jpg", 4, 5)
    with pytest.raises(DataError, match="semantic label map folder not found"):
        CocoDetection(synth_with_maps / "annotations/train.json", synth_with_maps / "train", Pipeline([]),
                      semantic_dir=tmp_path / "nowhere")


def synth_sets(root: Path, **extra) -> list[str]:
    sets = [f"data.train.ann_file={root}/annotations/train.json", f"data.train.img_dir={root}/train",
            f"data.val.ann_file={root}/annotations/val.json", f"data.val.img_dir={root}/val",
            "data.synth.num_train=4", "data.synth.num_val=2"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


def test_switching_semantic_on_writes_the_maps_beside_an_existing_dataset(tmp_path):
    root = tmp_path / "synth"
    plain = load_config(ROOT / "configs/faster_rcnn_r18_fpn_synth.yaml", synth_sets(root))
    ensure_synthetic(plain.data)
    images = {p.name: p.read_bytes() for p in (root / "train").iterdir()}
    assert not semantic_dir(root, "train").exists()
    cfg = load_config(ROOT / "configs/faster_rcnn_r18_fpn_synth.yaml",
                      synth_sets(root, **{"data.synth.semantic": "true",
                                          "data.train.seg_dir": str(semantic_dir(root, "train"))}))
    ensure_synthetic(cfg.data)
    assert sorted(p.name for p in semantic_dir(root, "train").iterdir()) == [
        f"{Path(image_file_name(i)).stem}.png" for i in range(4)]
    assert {p.name: p.read_bytes() for p in (root / "train").iterdir()} == images
    wrong = load_config(ROOT / "configs/faster_rcnn_r18_fpn_synth.yaml",
                        synth_sets(root, **{"data.synth.semantic": "true", "data.train.seg_dir": str(tmp_path)}))
    with pytest.raises(ConfigError, match="data.train.seg_dir: the synthetic label maps live at"):
        ensure_synthetic(wrong.data)


def test_a_model_without_a_semantic_head_does_not_read_maps(tmp_path):
    root = tmp_path / "synth"
    cfg = load_config(ROOT / "configs/faster_rcnn_r18_fpn_synth.yaml",
                      synth_sets(root, **{"data.synth.semantic": "true",
                                          "data.train.seg_dir": str(semantic_dir(root, "train"))}))
    ds = build_dataset(cfg, "train")
    assert ds.semantic_dir is None and "semantic" not in ds[0][1]
