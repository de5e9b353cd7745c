"""R-FCN: the position-sensitive box head (average voting, bins reading their own maps, by hand),
its training losses, the detector's level routing (RPN on C4, the head on C5) and bad settings."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn
from torch.nn import functional as F

from dettool.config import load_config
from dettool.errors import ConfigError
from dettool.trainer import builder
from dettool.trainer.models.losses.cross_entropy_loss import CrossEntropyLoss
from dettool.trainer.models.losses.smooth_l1_loss import SmoothL1Loss
from dettool.trainer.models.roi_heads.rfcn_head import PSRoIBBoxHead, RFCNRoIHead
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder

ROOT = Path(__file__).resolve().parents[3]
SYNTH = ROOT / "configs/rfcn_r18_synth.yaml"


def identity_head(num_classes: int, k: int) -> PSRoIBBoxHead:
    """A head without the reduction whose class maps are its input (a 1x1 identity conv)."""
    channels = k * k * (num_classes + 1)
    head = PSRoIBBoxHead(in_channels=channels, feat_channels=0, output_size=k, stride=1, sampling_ratio=2,
                         num_classes=num_classes, reg_class_agnostic=True, bbox_coder=DeltaXYWHCoder(),
                         loss_cls=CrossEntropyLoss(weight=1.0), loss_bbox=SmoothL1Loss(beta=1.0, weight=1.0))
    with torch.no_grad():
        head.cls_maps.weight.copy_(torch.eye(channels)[:, :, None, None])
        head.cls_maps.bias.zero_()
    return head


def test_average_voting_is_the_mean_of_each_class_maps():
    """Maps of constant value j (channel j): class c scores the mean of its k*k maps, c*k*k + (k*k - 1) / 2."""
    head = identity_head(num_classes=2, k=3)
    feat = torch.arange(27, dtype=torch.float32)[None, :, None, None].expand(1, 27, 12, 12).contiguous()
    rois = torch.tensor([[0.0, 1.0, 2.0, 9.0, 11.0], [0.0, 0.0, 0.0, 12.0, 12.0]])
    cls_score, bbox_pred = head(feat, rois)
    torch.testing.assert_close(cls_score, torch.tensor([[4.0, 13.0, 22.0]] * 2))
    assert bbox_pred.shape == (2, 4)


def test_each_bin_reads_only_its_own_map():
    """k = 2 on an 8x8 map: the map of bin (i, j) is 1 in quadrant (i, j) only. A RoI over the
    map scores 1 for every class (each bin sees its lit quadrant); with the quadrants of the maps
    mirrored every bin reads zeros, so the position-sensitive score is 0."""
    k, classes = 2, 1
    head = identity_head(num_classes=classes, k=k)
    feat = torch.zeros(1, k * k * (classes + 1), 8, 8)
    mirrored = torch.zeros_like(feat)
    for c in range(classes + 1):
        for i in range(k):
            for j in range(k):
                feat[0, (c * k + i) * k + j, 4 * i: 4 * i + 4, 4 * j: 4 * j + 4] = 1.0
                mirrored[0, (c * k + i) * k + j, 4 * (1 - i): 4 * (1 - i) + 4, 4 * (1 - j): 4 * (1 - j) + 4] = 1.0
    roi = torch.tensor([[0.0, 0.0, 0.0, 8.0, 8.0]])
    torch.testing.assert_close(head(feat, roi)[0], torch.ones(1, 2))
    torch.testing.assert_close(head(mirrored, roi)[0], torch.zeros(1, 2))


def test_scores_and_deltas_are_averaged_over_the_maps_of_the_reduction():
    """The full head (1x1 reduction with ReLU, stride 16) equals its parts: conv, ReLU, convs,
    torchvision's ps_roi_align and the mean over the bins."""
    import torchvision

    torch.manual_seed(0)
    head = PSRoIBBoxHead(in_channels=8, feat_channels=6, output_size=3, stride=16, sampling_ratio=2, num_classes=2,
                         reg_class_agnostic=True, bbox_coder=DeltaXYWHCoder(), loss_cls=CrossEntropyLoss(weight=1.0),
                         loss_bbox=SmoothL1Loss(beta=1.0, weight=1.0))
    for p in head.parameters():
        nn.init.normal_(p)
    feat = torch.randn(2, 8, 10, 12)
    rois = torch.tensor([[0.0, 10.0, 20.0, 100.0, 140.0], [1.0, 0.0, 0.0, 190.0, 150.0]])
    x = F.relu(head.reduce(feat))
    want = [torchvision.ops.ps_roi_align(conv(x), rois, 3, 1 / 16, 2).mean(dim=(2, 3))
            for conv in (head.cls_maps, head.reg_maps)]
    got = head(feat, rois)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def _batch():
    images = torch.randn(2, 3, 96, 128)
    targets = [{"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0]]), "labels": torch.tensor([2]),
                "ignore_boxes": torch.zeros((0, 4))},
               {"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long),
                "ignore_boxes": torch.zeros((0, 4))}]
    meta = {"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)}
    return images, targets, [dict(meta), dict(meta)]


def test_rfcn_routes_c4_to_the_rpn_and_c5_to_the_head():
    cfg = load_config(SYNTH)
    torch.manual_seed(0)
    model = builder.build_model(cfg)
    assert isinstance(model.roi_head, RFCNRoIHead) and model.roi_head.bbox_head.reg_out_channels == 4
    seen = {}

    def record(name, shapes):
        def hook(module, args):
            seen.setdefault(name, shapes(args))  # returns None: the inputs stay as they are
        return hook

    model.rpn_head.register_forward_pre_hook(record("rpn", lambda args: [f.shape for f in args[0]]))
    model.roi_head.bbox_head.register_forward_pre_hook(record("roi", lambda args: args[0].shape))
    images, targets, metas = _batch()
    model.train()
    losses = model.loss(images, targets, metas)
    assert seen["rpn"] == [(2, 256, 6, 8)] and seen["roi"][1:] == (512, 6, 8)  # OHEM ranks image by image
    assert float(losses["loss_bbox"]) > 0 and float(losses["loss_cls"]) > 0
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    # the position-sensitive pooling passes the gradient down to res5 and res4
    assert model.backbone.layer4[0].conv1.weight.grad.abs().sum() > 0
    assert model.backbone.layer3[0].conv1.weight.grad.abs().sum() > 0


def test_rfcn_loss_is_cross_entropy_and_giou_of_the_sampled_rois():
    """With OHEM replaced by taking every RoI (num large, all proposals kept), the RoI head's
    losses equal the hand-computed ones on ``bbox_forward``'s outputs: cross entropy over every RoI
    (the gt box added as a proposal is the one positive) and the configured GIoU x 2 on it."""
    cfg = load_config(SYNTH, ["model.roi_head.sampler={type: random, num: 64, pos_fraction: 1.0, "
                              "add_gt_as_proposals: true}"])
    torch.manual_seed(0)
    model = builder.build_model(cfg).train()
    feats = [torch.randn(1, 512, 6, 8)]
    gt = torch.tensor([[10.0, 12.0, 60.0, 70.0]])
    proposals = [torch.tensor([[70.0, 10.0, 120.0, 40.0], [0.0, 50.0, 30.0, 90.0]])]  # IoU 0 with the gt
    targets = [{"boxes": gt, "labels": torch.tensor([1]), "ignore_boxes": torch.zeros((0, 4))}]
    losses = model.roi_head.loss(feats, proposals, targets, [{}])
    rois = torch.cat([torch.zeros(3, 1), torch.cat([gt, proposals[0]])], dim=1)
    cls_score, bbox_pred = model.roi_head.bbox_forward(feats, rois)
    # positives (the gt) first, then the two negatives (labelled background, 4) in any order
    torch.testing.assert_close(losses["loss_cls"], F.cross_entropy(cls_score, torch.tensor([1, 4, 4])))
    coder = model.roi_head.bbox_head.bbox_coder
    box = coder.decode(gt, bbox_pred[:1])
    from torchvision.ops import generalized_box_iou_loss

    torch.testing.assert_close(losses["loss_bbox"], 2.0 * generalized_box_iou_loss(box, gt).sum() / 3)


@pytest.mark.parametrize("sets,match", [
    (["model.rpn_levels=[2]"], "model.rpn_levels: level 2 is not one of the 2 levels"),
    (["model.roi_levels=[0, 1]"], "model.roi_levels: heads need one channel count"),
])
def test_bad_level_choices_name_the_key(sets, match):
    with pytest.raises(ConfigError, match=match):
        builder.build_model(load_config(SYNTH, sets))
