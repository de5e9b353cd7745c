"""Double-Head R-CNN: the double box head, the enlarged RoIs of its regression branch, its losses,
and equality with MMDetection's own ``DoubleConvFCBBoxHead`` / RoI extractor where it is installed."""
from __future__ import annotations

import math

import pytest
import torch
import torchvision
from detector_helpers import CONFIGS, empty_and_one_gt_losses
from mmdet_reference import import_mmdet

from dettool.config import load_config
from dettool.config import schema as C
from dettool.trainer import builder
from dettool.trainer.builder.roi_heads import build_bbox_head, build_roi_extractor
from dettool.trainer.models.roi_heads.double_bbox_head import DoubleConvFCBBoxHead
from dettool.trainer.models.roi_heads.double_roi_head import DoubleHeadRoIHead

NUM_CLASSES, CH, S = 3, 8, 7
STRIDES = (4, 8, 16, 32)


def _head(**kw) -> DoubleConvFCBBoxHead:
    torch.manual_seed(0)
    cfg = C.DoubleConvFCBBoxHeadConfig(**{"num_convs": 2, "conv_out_channels": 16, "fc_out_channels": 32, **kw})
    return build_bbox_head(cfg, NUM_CLASSES, CH, S, "bbox_head")


def _feats(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CH, 512 // s, 640 // s, generator=g) for s in STRIDES]


def _rois() -> torch.Tensor:
    # RoIs of every level, some at the image border; the second is on level 0 but enlarged 1.3
    # times it would map to level 1
    return torch.tensor([[0, 10.0, 12.0, 40.0, 50.0], [0, 0.0, 0.0, 100.0, 100.0], [1, 0.0, 0.0, 150.0, 140.0],
                         [1, 30.0, 20.0, 330.0, 300.0], [0, 5.0, 5.0, 600.0, 500.0], [1, 2.0, 3.0, 60.0, 20.0]])


def test_forward_shapes_and_branches():
    head = _head()
    cls, reg = head(torch.randn(5, CH, S, S), torch.randn(5, CH, S, S))
    assert cls.shape == (5, NUM_CLASSES + 1) and reg.shape == (5, 4 * NUM_CLASSES)
    assert len(head.conv_branch) == 2 and len(head.fc_branch) == 2
    assert head.conv_branch[0].conv2.in_channels == 4  # bottleneck width: a quarter of 16
    # classification reads only the first input, regression only the second
    x_cls, x_reg = torch.randn(5, CH, S, S), torch.randn(5, CH, S, S)
    head.eval()
    a = head(x_cls, x_reg)
    b = head(x_cls, torch.randn(5, CH, S, S))
    c = head(torch.randn(5, CH, S, S), x_reg)
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], c[1])


def test_regression_branch_pools_enlarged_rois_at_the_original_level():
    extractor = build_roi_extractor(C.RoIExtractorConfig(sampling_ratio=2))
    feats, rois = _feats(), _rois()
    got = extractor(feats, rois, roi_scale_factor=1.3)
    w, h = rois[:, 3] - rois[:, 1], rois[:, 4] - rois[:, 2]
    cx, cy = (rois[:, 1] + rois[:, 3]) / 2, (rois[:, 2] + rois[:, 4]) / 2
    big = torch.stack([rois[:, 0], cx - 0.65 * w, cy - 0.65 * h, cx + 0.65 * w, cy + 0.65 * h], 1)
    levels = torch.floor(torch.log2(torch.sqrt(w * h) / 56 + 1e-6)).clamp(0, 3).long()  # of the ORIGINAL RoIs
    assert levels.tolist() == [0, 0, 1, 2, 3, 0]
    for i, lvl in enumerate(levels.tolist()):
        ref = torchvision.ops.roi_align(feats[lvl], big[i:i + 1], (S, S), 1 / STRIDES[lvl], 2, aligned=True)
        torch.testing.assert_close(got[i:i + 1], ref)
    torch.testing.assert_close(extractor(feats, rois, roi_scale_factor=1.0), extractor(feats, rois))


def test_double_head_roi_head_losses_empty_and_one_gt():
    cfg = load_config(CONFIGS / "dh_faster_rcnn_r18_fpn_synth.yaml")
    model = builder.build_model(cfg)
    assert isinstance(model.roi_head, DoubleHeadRoIHead) and model.roi_head.reg_roi_scale_factor == 1.3
    assert model.roi_head.bbox_head.loss_cls.weight == 2.0
    empty, losses = empty_and_one_gt_losses(model)
    assert empty["loss_cls"].item() > 0 and empty["loss_bbox"].item() == 0
    assert all(math.isfinite(v.item()) for v in losses.values())
    assert losses["loss_bbox"].item() > 0
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert model.roi_head.bbox_head.res_block.conv1.conv.weight.grad is not None


# ----------------------------------------------------------------------------------- MMDetection


@pytest.mark.parametrize("agnostic", [False, True])
def test_double_head_equals_mmdetection_with_the_same_weights(agnostic):
    import_mmdet()
    from mmdet.models.roi_heads.bbox_heads import DoubleConvFCBBoxHead as MMDetDoubleHead

    torch.manual_seed(1)
    ref = MMDetDoubleHead(num_convs=2, num_fcs=2, in_channels=CH, conv_out_channels=16, fc_out_channels=32,
                          roi_feat_size=S, num_classes=NUM_CLASSES, reg_class_agnostic=agnostic).eval()
    ours = _head(reg_class_agnostic=agnostic).eval()
    ours.load_state_dict(ref.state_dict())  # the same keys, strictly
    x_cls, x_reg = torch.randn(6, CH, S, S), torch.randn(6, CH, S, S)
    with torch.no_grad():
        for a, b in zip(ours(x_cls, x_reg), ref(x_cls, x_reg)):
            torch.testing.assert_close(a, b)


def test_enlarged_roi_features_equal_mmdetection():
    import_mmdet()
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor

    ref = SingleRoIExtractor(roi_layer=dict(type="RoIAlign", output_size=S, sampling_ratio=2), out_channels=CH,
                             featmap_strides=list(STRIDES))
    ours = build_roi_extractor(C.RoIExtractorConfig(sampling_ratio=2))
    feats, rois = _feats(), _rois()
    with torch.no_grad():
        torch.testing.assert_close(ours(feats, rois, roi_scale_factor=1.3), ref(tuple(feats), rois,
                                                                                roi_scale_factor=1.3))
        torch.testing.assert_close(ours(feats, rois), ref(tuple(feats), rois))
