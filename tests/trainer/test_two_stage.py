"""Two-stage and cascade detectors: stage settings, empty ground truth, tiny end-to-end runs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dettool.config import load_config
from dettool.data.proposals import load_proposals
from dettool.trainer import builder
from dettool.trainer.evaluate import evaluate_checkpoint
from dettool.trainer.proposals import write_proposals
from dettool.trainer.train import train

ROOT = Path(__file__).resolve().parents[2]


def tiny_sets(root: Path, work: Path, **extra: str) -> list[str]:
    sets = [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth=null", "data.num_workers=0", "data.train_scale=128x96", "data.test_scale=128x96",
            "train.batch_size=4", "train.max_iters=2", "train.eval_interval=1", "train.log_interval=1",
            "train.lr.warmup_iters=1", "train.channels_last=false", f"work_dir={work}"]
    return sets + [f"{k}={v}" for k, v in extra.items()]


def empty_batch(cfg, with_masks: bool):
    images = torch.randn(2, 3, 96, 128)
    target = {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long),
              "ignore_boxes": torch.zeros((0, 4))}
    if with_masks:
        target["masks"] = torch.zeros((0, 96, 128), dtype=torch.uint8)
    if getattr(cfg.model.roi_head, "semantic_head", None) is not None:  # HTC: no labelled pixel either
        target["semantic"] = torch.full((96, 128), 255, dtype=torch.uint8)
    meta = {"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)}
    return images, [dict(target), dict(target)], [dict(meta), dict(meta)]


def test_cascade_stages_use_their_iou_thresholds_and_weights():
    cfg = load_config(ROOT / "configs/cascade_rcnn_r18_fpn_synth.yaml")
    roi = builder.build_model(cfg).roi_head
    assert [(a.pos_iou_thr, a.neg_iou_thr, a.min_pos_iou) for a in roi.assigners] == [(0.5, 0.5, 0.5), (0.6, 0.6, 0.6),
                                                                                         (0.7, 0.7, 0.7)]
    assert roi.stage_loss_weights == [1.0, 0.5, 0.25]
    coco = load_config(ROOT / "configs/cascade_rcnn_r50_fpn_1x_coco.yaml").model.roi_head
    assert [s.assigner.pos_iou_thr for s in coco.stages] == [0.5, 0.6, 0.7]


def test_cascade_stage_assignment_follows_threshold():
    """A proposal at IoU 0.65 with the gt is positive for stages 1-2 and negative for stage 3."""
    cfg = load_config(ROOT / "configs/cascade_rcnn_r18_fpn_synth.yaml")
    roi = builder.build_model(cfg).roi_head
    gt = torch.tensor([[10.0, 10.0, 50.0, 50.0]])
    prop = torch.tensor([[10.0, 10.0, 50.0, 36.0]])  # IoU = 26/40 = 0.65
    labels = torch.tensor([2])
    results = [a.assign(prop, gt, labels).gt_inds.item() for a in roi.assigners]
    assert results == [1, 1, 0]


@pytest.mark.parametrize("name,mask", [("faster_rcnn_r18_fpn_synth", False), ("mask_rcnn_r18_fpn_synth", True),
                                       ("cascade_mask_rcnn_r18_fpn_synth", True), ("rfcn_r18_synth", False),
                                       ("libra_faster_rcnn_r18_fpn_synth", False),
                                       ("ga_faster_rcnn_r18_fpn_synth", False), ("ms_rcnn_r18_fpn_synth", True),
                                       ("grid_rcnn_r18_fpn_synth", False), ("htc_r18_fpn_synth", True)])
def test_empty_ground_truth_gives_classification_loss_only(name, mask):
    cfg = load_config(ROOT / f"configs/{name}.yaml")
    torch.manual_seed(0)
    model = builder.build_model(cfg)
    losses = model.loss(*empty_batch(cfg, mask))
    cls = [v for k, v in losses.items() if k.startswith("loss_") and "cls" in k]
    other = [v for k, v in losses.items()
             if k.startswith("loss_") and ("bbox" in k or "mask" in k or "grid" in k or "semantic" in k)]
    assert cls and all(float(v.detach()) > 0 for v in cls)
    assert other and all(float(v.detach()) == 0 for v in other)
    assert any("mask" in k for k in losses) == mask
    total = sum(v for k, v in losses.items() if k.startswith("loss_"))
    total.backward()  # every loss stays connected to the graph


def test_mask_rcnn_end_to_end_reports_segm(tiny_synth, tmp_path):
    cfg = load_config(ROOT / "configs/mask_rcnn_r18_fpn_synth.yaml", tiny_sets(tiny_synth, tmp_path / "w"))
    metrics = train(cfg)
    for key in ("bbox_AP", "segm_AP", "segm_AP50", "segm_APl"):
        assert 0.0 <= metrics[key] <= 1.0
    report = evaluate_checkpoint(cfg, tmp_path / "w/iter_2.pth", out=tmp_path / "m.json")
    assert "segm_AP" in report and (tmp_path / "m.json").is_file()


def test_rpn_proposals_round_trip_into_fast_rcnn(tiny_synth, tmp_path):
    rpn_cfg = load_config(ROOT / "configs/rpn_r18_fpn_synth.yaml", tiny_sets(tiny_synth, tmp_path / "rpn"))
    metrics = train(rpn_cfg)
    assert set(metrics) == {"AR@100", "AR@300", "AR@1000"}
    ckpt = tmp_path / "rpn/iter_2.pth"
    paths = {split: write_proposals(rpn_cfg, ckpt, split, tmp_path / f"{split}.pt") for split in ("train", "val")}
    val = load_proposals(paths["val"])
    assert len(val) == 6 and all(p.shape[1] == 5 for p in val.values())
    fast = load_config(ROOT / "configs/faster_rcnn_r18_fpn_synth.yaml", tiny_sets(
        tiny_synth, tmp_path / "fast", **{"model.rpn_head": "null", "data.train.proposals_file": str(paths["train"]),
                                          "data.val.proposals_file": str(paths["val"])}))
    ds = builder.build_dataset(fast, "val")
    _, _, meta = ds[0]
    sx, sy = meta["scale_factor"]
    original = val[meta["image_id"]]
    assert torch.allclose(meta["proposals"][:, :4], original[:, :4] * torch.tensor([sx, sy, sx, sy]), atol=1e-4)
    metrics = train(fast)
    assert 0.0 <= metrics["bbox_AP"] <= 1.0
