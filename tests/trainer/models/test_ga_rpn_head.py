"""GA-RPN: proposals only where the location branch finds a centre, on the guided anchors (by
hand), and its losses under MMDetection's names."""
from __future__ import annotations

from pathlib import Path

import torch

from dettool.config import load_config
from dettool.trainer import builder
from dettool.trainer.models.dense_heads.ga_rpn_head import GARPNHead

ROOT = Path(__file__).resolve().parents[3]


def ga_rpn() -> GARPNHead:
    torch.manual_seed(0)
    head = builder.build_model(load_config(ROOT / "configs/ga_faster_rcnn_r18_fpn_synth.yaml")).rpn_head
    assert isinstance(head, GARPNHead)
    return head.eval()


def raw_outputs(sizes, lit: dict[int, tuple[int, int]], shape: float = 0.0):
    """Objectness logit 3 everywhere, zero deltas, shapes ``shape``; location logit 5 at the
    ``lit`` location of each level (level -> (y, x)), -10 elsewhere (sigmoid below 0.01)."""
    cls, reg, shp, loc = [], [], [], []
    for lvl, (h, w) in enumerate(sizes):
        cls.append(torch.full((1, 1, h, w), 3.0))
        reg.append(torch.zeros(1, 4, h, w))
        shp.append(torch.full((1, 2, h, w), shape))
        logit = torch.full((1, 1, h, w), -10.0)
        if lvl in lit:
            logit[0, 0, lit[lvl][0], lit[lvl][1]] = 5.0
        loc.append(logit)
    return cls, reg, shp, loc


def test_only_locations_past_the_filter_give_proposals_on_their_guided_anchor():
    """On a 64x64 image: level 1 (stride 8) lit at (y 3, x 4), level 2 (stride 16) at (1, 2). With
    zero shapes the guided anchor is the square (4 strides wide, centred on the location's top-left
    corner as MMDetection's anchors: offset 0), zero deltas keep it, and it is clipped to the image."""
    head = ga_rpn()
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    out = head.proposals(raw_outputs(sizes, {1: (3, 4), 2: (1, 2)}), torch.tensor([[64, 64]]), training=False)
    assert int(out.num_dets[0]) == 2
    boxes = out.boxes[0, :2]
    want = torch.tensor([[32 - 16, 24 - 16, 32 + 16, 24 + 16],  # stride 8: 32 px square at (x 32, y 24)
                         [32 - 32, 16 - 32, 32 + 32, 16 + 32]], dtype=torch.float32)  # stride 16: 64 px at (32, 16)
    want = want.clamp(0, 64)
    got = boxes[torch.argsort(boxes[:, 2] - boxes[:, 0])]
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(out.scores[0, :2], torch.full((2,), float(torch.sigmoid(torch.tensor(3.0)))))


def test_the_shape_branch_scales_the_guided_anchor():
    """A shape output of log(2) / std (the anchor coder's width and height std, 0.14) doubles the
    square's width and height: 64 px at stride 16 becomes 128 px."""
    head = ga_rpn()
    torch.testing.assert_close(head.anchor_coder.stds[2:], torch.tensor([0.14, 0.14]))
    shape = float(torch.log(torch.tensor(2.0))) / 0.14
    sizes = [(16, 16), (8, 8), (4, 4), (2, 2), (1, 1)]
    out = head.proposals(raw_outputs(sizes, {2: (2, 2)}, shape=shape), torch.tensor([[128, 128]]), training=False)
    assert int(out.num_dets[0]) == 1
    want = torch.tensor([32.0 - 64, 32.0 - 64, 32.0 + 64, 32.0 + 64]).clamp(0, 128)
    torch.testing.assert_close(out.boxes[0, 0], want)


def test_losses_carry_mmdetections_names_and_reach_every_branch():
    head = ga_rpn().train()
    torch.manual_seed(1)
    feats = [torch.randn(2, 96, 64 // s, 64 // s) for s in (4, 8, 16, 32, 64)]
    raw = head(feats)
    targets = [{"boxes": torch.tensor([[8.0, 10.0, 40.0, 50.0]]), "labels": torch.tensor([3]),
                "ignore_boxes": torch.zeros((0, 4))},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long),
                "ignore_boxes": torch.zeros((0, 4))}]
    metas = [{"img_shape": (64, 64), "pad_shape": (64, 64)}] * 2
    losses = head.loss(raw, targets, metas)
    assert set(losses) == {"loss_rpn_cls", "loss_rpn_bbox", "loss_anchor_shape", "loss_anchor_loc"}
    assert all(float(v) > 0 for v in losses.values())
    sum(losses.values()).backward()
    for name in ("rpn_conv", "conv_loc", "conv_shape", "conv_cls", "conv_reg"):
        assert getattr(head, name).weight.grad.abs().sum() > 0, name
