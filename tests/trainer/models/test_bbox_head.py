"""ConvFCBBoxHead: shapes, target layout, the empty-gt loss, decoding and cascade refinement."""
from __future__ import annotations

import pytest
import torch

from dettool.config import schema as C
from dettool.trainer.builder.roi_heads import build_bbox_head
from dettool.trainer.models.postprocess.roi_decoders import BoxDecode
from dettool.trainer.models.roi_heads.bbox_head import ConvFCBBoxHead

NUM_CLASSES = 3
CH, S = 8, 5


def _head(**kw) -> ConvFCBBoxHead:
    cfg = C.ConvFCBBoxHeadConfig(**{"conv_out_channels": 16, "fc_out_channels": 32, "loss_bbox": C.L1LossConfig(),
                                    **kw})
    return build_bbox_head(cfg, NUM_CLASSES, CH, S, "bbox_head")


def predict_boxes(head: ConvFCBBoxHead, rois: torch.Tensor, cls: torch.Tensor, reg: torch.Tensor,
                  img_shape: tuple[int, int] = (1e6, 1e6)) -> tuple[torch.Tensor, torch.Tensor]:
    """One image's per-class boxes ``[R, C, 4]`` and scores ``[R, C]`` through ``BoxDecode``."""
    decode = BoxDecode(head.bbox_coder, head.num_classes, head.reg_class_agnostic)
    boxes, scores = decode(rois, cls, reg, torch.tensor([rois.shape[0]]), torch.tensor([list(img_shape)]))
    if head.reg_class_agnostic:
        boxes = boxes[:, :, None].expand(1, rois.shape[0], head.num_classes, 4)
    return boxes[0], scores[0]


def _rois() -> torch.Tensor:
    return torch.tensor([[0.0, 10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 0.0, 20.0, 20.0],
                         [1.0, 30.0, 20.0, 60.0, 62.0], [1.0, 5.0, 5.0, 15.0, 25.0]])


@pytest.mark.parametrize("convs,fcs,norm", [(0, 2, "none"), (4, 1, "gn")])
@pytest.mark.parametrize("agnostic", [False, True])
def test_forward_shapes(convs, fcs, norm, agnostic):
    head = _head(num_shared_convs=convs, num_shared_fcs=fcs, norm=norm, reg_class_agnostic=agnostic)
    assert sum(isinstance(m, torch.nn.GroupNorm) for m in head.modules()) == (4 if norm == "gn" else 0)
    assert sum(isinstance(m, torch.nn.Linear) for m in head.shared_fcs) == fcs
    cls, reg = head(torch.randn(6, CH, S, S))
    assert cls.shape == (6, NUM_CLASSES + 1)
    assert reg.shape == (6, 4 if agnostic else 4 * NUM_CLASSES)
    cls, reg = head(torch.randn(0, CH, S, S))
    assert cls.shape == (0, NUM_CLASSES + 1) and reg.shape[0] == 0


def test_get_targets_puts_positives_first():
    head = _head()
    pos_rois = torch.tensor([[10.0, 10.0, 50.0, 40.0], [0.0, 0.0, 20.0, 20.0]])
    gts = torch.tensor([[12.0, 8.0, 52.0, 44.0], [1.0, 1.0, 19.0, 22.0]])
    labels, lw, bt, bw = head.get_targets(pos_rois, gts, torch.tensor([2, 0]), num_neg=3)
    assert labels.tolist() == [2, 0, 3, 3, 3]  # background is the last class
    assert lw.tolist() == [1.0] * 5
    torch.testing.assert_close(bt[:2], head.bbox_coder.encode(pos_rois, gts))
    assert bt[2:].abs().sum() == 0
    assert bw.tolist() == [[1.0] * 4] * 2 + [[0.0] * 4] * 3
    # RoI-head stds (0.1, 0.1, 0.2, 0.2): a 2 px shift of a 40 px box is 0.5
    assert bt[0, 0].item() == pytest.approx(2 / 40 / 0.1)
    labels, lw, bt, bw = head.get_targets(torch.zeros((0, 4)), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 0)
    assert labels.shape == (0,) and bt.shape == (0, 4)
    decoded = _head(loss_bbox=C.GIoULossConfig(weight=1.0))
    assert decoded.reg_decoded_bbox
    torch.testing.assert_close(decoded.get_targets(pos_rois, gts, torch.tensor([2, 0]), 1)[2][:2], gts)


def test_empty_gt_loss_all_negative():
    head = _head(num_shared_convs=1, norm="gn")
    rois = _rois()
    cls, reg = head(torch.randn(4, CH, S, S))
    labels, lw, bt, bw = head.get_targets(torch.zeros((0, 4)), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 4)
    losses = head.loss(cls, reg, rois, labels, lw, bt, bw)
    assert set(losses) == {"loss_cls", "loss_bbox", "acc"}
    assert losses["loss_cls"] > 0
    assert losses["loss_bbox"] == 0
    (losses["loss_cls"] + losses["loss_bbox"]).backward()
    assert head.fc_reg.weight.grad is not None  # zero, but in the graph
    empty = head.loss(*head(torch.zeros(0, CH, S, S)), torch.zeros((0, 5)), *head.get_targets(
        torch.zeros((0, 4)), torch.zeros((0, 4)), torch.zeros(0, dtype=torch.long), 0))
    assert empty["loss_cls"] == 0 and empty["loss_bbox"] == 0


@pytest.mark.parametrize("agnostic", [False, True])
def test_loss_picks_the_gt_class_deltas(agnostic):
    head = _head(reg_class_agnostic=agnostic)
    rois = _rois()
    labels = torch.tensor([1, 2, 3, 3])
    lw = torch.ones(4)
    bt = torch.tensor([[0.5, -0.5, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.0] * 4, [0.0] * 4])
    bw = torch.tensor([[1.0] * 4] * 2 + [[0.0] * 4] * 2)
    cls = torch.zeros(4, NUM_CLASSES + 1)
    cls[torch.arange(4), torch.tensor([1, 0, 3, 3])] = 5.0  # 3 of 4 right
    reg = torch.zeros(4, 4 if agnostic else 4 * NUM_CLASSES)
    losses = head.loss(cls, reg, rois, labels, lw, bt, bw)
    assert losses["loss_bbox"].item() == pytest.approx(bt.abs().sum().item() / 4)  # avg over all R rois
    assert losses["acc"].item() == pytest.approx(75.0)
    if not agnostic:  # only the gt class's 4 deltas count
        reg[0, 4:8] = bt[0]
        reg[1, 8:12] = bt[1]
        reg[0, 0:4] = 9.0
        assert head.loss(cls, reg, rois, labels, lw, bt, bw)["loss_bbox"].item() == pytest.approx(0.0)


@pytest.mark.parametrize("agnostic", [False, True])
def test_box_decode_and_refine_rois(agnostic):
    head = _head(reg_class_agnostic=agnostic)
    rois = _rois()
    cls, reg = head(torch.randn(4, CH, S, S))
    boxes, scores = predict_boxes(head, rois, cls, reg, img_shape=(50, 55))
    assert boxes.shape == (4, NUM_CLASSES, 4) and scores.shape == (4, NUM_CLASSES)
    assert (scores.sum(1) < 1).all()  # background dropped
    assert boxes[..., 2].max() <= 55 and boxes[..., 3].max() <= 50
    # zero deltas decode to the RoI itself
    boxes, _ = predict_boxes(head, rois, cls, torch.zeros_like(reg))
    torch.testing.assert_close(boxes, rois[:, None, 1:].expand(4, NUM_CLASSES, 4))
    refined = head.refine_rois(rois, torch.tensor([0, 1, 2, 0]), torch.zeros_like(reg))
    torch.testing.assert_close(refined, rois)
    labels = torch.tensor([2, 0, 1, 1])
    refined = head.refine_rois(rois, labels, reg, img_shape=(50, 55))
    full, _ = predict_boxes(head, rois, cls, reg, img_shape=(50, 55))
    assert refined.shape == (4, 5) and refined[:, 0].tolist() == rois[:, 0].tolist()
    torch.testing.assert_close(refined[:, 1:], full[torch.arange(4), labels])
    empty = torch.zeros((0, 5))
    cls0, reg0 = head(torch.zeros(0, CH, S, S))
    assert head.refine_rois(empty, torch.zeros(0, dtype=torch.long), reg0).shape == (0, 5)
