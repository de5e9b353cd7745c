"""Grid R-CNN: the grid head's geometry, targets, loss and decoding against hand-computed values
(and MMDetection's ``GridHead.get_targets``), the RoI head's jitter and its losses."""
from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from dettool.config import load_config
from dettool.errors import ConfigError
from dettool.trainer import builder
from dettool.trainer.models.roi_heads.grid_head import GridDecode, GridHead, grid_neighbours, sub_region_origins
from dettool.trainer.models.roi_heads.grid_roi_head import jitter_boxes

ROOT = Path(__file__).resolve().parents[3]


def small_head(**kw) -> GridHead:
    args = dict(in_channels=8, roi_feat_size=14, grid_points=9, num_convs=2, point_feat_channels=4, num_groups=9,
                loss_weight=15.0)
    return GridHead(**{**args, **kw})


def test_grid_geometry_is_mmdetections():
    # point i: column i // 3, row i % 3; neighbours left, up, down, right
    assert grid_neighbours(3) == [(1, 3), (0, 2, 4), (1, 5), (0, 4, 6), (1, 3, 5, 7), (2, 4, 8), (3, 7), (4, 6, 8),
                                  (5, 7)]
    # the 28x28 heatmap of each point inside the 56x56 whole map: 0, a quarter before the middle (14), the half (28)
    assert sub_region_origins(3, 56) == [(0, 0), (0, 14), (0, 28), (14, 0), (14, 14), (14, 28), (28, 0), (28, 14),
                                         (28, 28)]


def test_forward_shapes_and_the_unfused_heatmap_only_in_training():
    head = small_head()
    fused, unfused = head(torch.randn(3, 8, 14, 14))
    assert fused.shape == unfused.shape == (3, 9, 28, 28)
    head.eval()
    fused_eval, none = head(torch.randn(3, 8, 14, 14))
    assert none is None and fused_eval.shape == (3, 9, 28, 28)
    # MMDetection's init: every heatmap starts at p = 0.01 (deconv weights of std 0.001)
    assert abs(float(fused.detach().sigmoid().mean()) - 0.01) < 1e-3


def test_targets_of_a_roi_equal_to_its_gt_by_hand():
    """RoI = gt = (0, 0, 28, 28): the expanded RoI (-14, -14, 42, 42) maps one pixel to one whole-map
    pixel, the gt's corners / mid-points fall at 14, 28, 42, i.e. (14, 14) in every point's own
    heatmap; radius 1 marks that pixel and its 4 neighbours."""
    head = small_head()
    box = torch.tensor([[0.0, 0.0, 28.0, 28.0]])
    t = head.get_targets(box, box, radius=1)
    assert t.shape == (1, 9, 28, 28)
    expected = torch.zeros(28, 28)
    for y, x in ((14, 14), (13, 14), (15, 14), (14, 13), (14, 15)):
        expected[y, x] = 1
    for p in range(9):
        torch.testing.assert_close(t[0, p], expected)


def test_targets_of_a_tiny_roi_are_empty():
    """An expanded RoI of at most grid_size (3) pixels a side has no positive pixel (MMDetection)."""
    head = small_head()
    t = head.get_targets(torch.tensor([[5.0, 5.0, 6.5, 9.0]]), torch.tensor([[5.0, 5.0, 7.0, 9.0]]), radius=1)
    assert float(t.sum()) == 0


@pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="MMDetection is not installed")
def test_targets_equal_mmdetections():
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.roi_heads.mask_heads.grid_head import GridHead as MMGridHead
    from mmengine.config import ConfigDict

    g = torch.Generator().manual_seed(0)
    gt = torch.rand(40, 2, generator=g) * 200
    gt = torch.cat([gt, gt + 4 + torch.rand(40, 2, generator=g) * 80], dim=1)
    rois = gt + torch.randn(40, 4, generator=g) * 6  # overlapping, some shifted beyond the gt
    rois[:3, 2:] = rois[:3, :2] + 1  # tiny RoIs: ignored
    for radius in (1, 2):
        ref = MMGridHead(in_channels=8, point_feat_channels=4, norm_cfg=dict(type="GN", num_groups=9))

        class Sampled:  # the two fields GridHead.get_targets reads
            pos_bboxes, pos_gt_bboxes = rois, gt

        expected = ref.get_targets([Sampled()], ConfigDict(pos_radius=radius))
        got = small_head().get_targets(rois, gt, radius=radius)
        assert float(expected.sum()) > 100
        torch.testing.assert_close(got, expected)


def test_loss_by_hand():
    head = small_head()
    zeros = torch.zeros(2, 9, 28, 28)
    targets = (torch.rand(2, 9, 28, 28) > 0.9).float()
    # logits 0: every pixel costs log 2, for the fused and the unfused heatmap
    assert math.isclose(float(head.loss(zeros, zeros, targets)), 15 * 2 * math.log(2), rel_tol=1e-6)
    empty = torch.zeros(0, 9, 28, 28, requires_grad=True)
    loss = head.loss(empty, empty, torch.zeros(0, 9, 28, 28))
    assert float(loss) == 0
    loss.backward()


def peak_logits(peaks: dict[int, tuple[int, int, float]], base: float = -20.0) -> torch.Tensor:
    """``[1, 9, 28, 28]`` logits of ``base`` with one ``(y, x, logit)`` peak per point."""
    logits = torch.full((1, 9, 28, 28), base)
    for p, (y, x, v) in peaks.items():
        logits[0, p, y, x] = v
    return logits


def test_decode_by_hand():
    """RoI (20, 20, 48, 48): its expanded RoI starts at 6, and whole-map pixel c lies at c + 0.5 + 6 px.
    Equal peaks at (14, 14) of each heatmap give the RoI shifted by half a pixel; unequal ones are
    averaged by probability."""
    decode = GridDecode(3, sub_region_origins(3, 56))
    rois = torch.tensor([[[20.0, 20.0, 48.0, 48.0]]])
    shapes = torch.tensor([[100.0, 100.0]])
    out = decode(peak_logits({p: (14, 14, 10.0) for p in range(9)}), rois, shapes)
    torch.testing.assert_close(out, torch.tensor([[[20.5, 20.5, 48.5, 48.5]]]))
    # column 0 (points 0, 1, 2) votes x1: peaks at local x 14, 10, 6 with p = sigmoid(10), 0.5, 0.5
    peaks = {p: (14, 14, 10.0) for p in range(9)}
    peaks.update({1: (14, 10, 0.0), 2: (14, 6, 0.0)})
    out = decode(peak_logits(peaks), rois, shapes)
    p0 = torch.sigmoid(torch.tensor(10.0))
    x1 = (p0 * 20.5 + 0.5 * (10 + 0.5 + 6) + 0.5 * (6 + 0.5 + 6)) / (p0 + 1.0)
    # the rows keep their peaks' y: y1, y2 (and x2, column 2) stay
    torch.testing.assert_close(out[0, 0], torch.stack([x1, torch.tensor(20.5), torch.tensor(48.5),
                                                       torch.tensor(48.5)]))
    # clipped to the image (h 30, w 40)
    out = decode(peak_logits({p: (14, 14, 10.0) for p in range(9)}), rois, torch.tensor([[30.0, 40.0]]))
    torch.testing.assert_close(out, torch.tensor([[[20.5, 20.5, 40.0, 30.0]]]))


def test_jitter_keeps_boxes_near_and_inside_the_image():
    boxes = torch.tensor([[10.0, 20.0, 50.0, 100.0], [0.0, 0.0, 30.0, 30.0]])
    torch.testing.assert_close(jitter_boxes(boxes, 0.0, (200, 300)), boxes)
    torch.manual_seed(0)
    j = jitter_boxes(boxes.repeat(500, 1), 0.15, (120, 300))
    size = (boxes[:, 2:] - boxes[:, :2]).repeat(500, 1)
    centre = ((boxes[:, :2] + boxes[:, 2:]) / 2).repeat(500, 1)
    inside = (j[:, 0] >= 0) & (j[:, 2] <= 299) & (j[:, 1] >= 0) & (j[:, 3] <= 119)
    assert bool(inside.all())
    unclipped = (j > 0.001).all(dim=1) & (j[:, 2] < 298.9) & (j[:, 3] < 118.9)
    moved = ((j[:, :2] + j[:, 2:]) / 2 - centre).abs() / size
    assert bool((moved[unclipped] <= 0.15 + 1e-5).all()) and float(moved[unclipped].max()) > 0.1


def test_grid_roi_head_trains_the_grid_on_jittered_positives():
    cfg = load_config(ROOT / "configs/grid_rcnn_r18_fpn_synth.yaml")
    torch.manual_seed(0)
    model = builder.build_model(cfg)
    images = torch.randn(2, 3, 96, 128)
    target = {"boxes": torch.tensor([[10.0, 12.0, 60.0, 70.0], [70.0, 20.0, 120.0, 60.0]]),
              "labels": torch.tensor([0, 2]), "ignore_boxes": torch.zeros((0, 4))}
    meta = {"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)}
    losses = model.loss(images, [dict(target), dict(target)], [dict(meta), dict(meta)])
    assert "loss_bbox" not in losses  # the box head only classifies
    # heatmaps at p = 0.01 against a few positive pixels: about 15 * 2 * (0.01 + 5 / 784 * 4.6)
    assert 0.5 < float(losses["loss_grid"]) < 2.0
    sum(v for k, v in losses.items() if k.startswith("loss_")).backward()
    assert model.roi_head.grid_head.deconv2.weight.grad.abs().sum() > 0


def test_grid_config_refuses_a_regressing_box_head_and_a_bad_grid():
    sets = ["model.roi_head.bbox_head.with_reg=true"]
    with pytest.raises(ConfigError, match="bbox_head.with_reg"):
        load_config(ROOT / "configs/grid_rcnn_r18_fpn_synth.yaml", sets)
    with pytest.raises(ConfigError, match="grid_points"):
        load_config(ROOT / "configs/grid_rcnn_r18_fpn_synth.yaml", ["model.roi_head.grid_head.grid_points=8"])
    with pytest.raises(ConfigError, match="num_groups"):
        load_config(ROOT / "configs/grid_rcnn_r18_fpn_synth.yaml", ["model.roi_head.grid_head.num_groups=10"])
