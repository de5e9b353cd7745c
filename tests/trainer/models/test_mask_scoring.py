"""Mask Scoring R-CNN: the MaskIoU head's targets, loss and rescoring by hand, and its configs."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dettool.config import load_config
from dettool.trainer import builder
from dettool.trainer.models.roi_heads.mask_scoring_roi_head import MaskScoringRoIHead
from dettool.trainer.models.roi_heads.maskiou_head import MaskIoUHead, area_ratios

ROOT = Path(__file__).resolve().parents[3]


def test_area_ratio_is_the_share_of_the_gt_mask_inside_the_truncated_box():
    """A 10x10 mask at rows 2-11, columns 4-13 of a 16x20 image (100 pixels). Box (5.9, 2.7, 9.5, 30):
    truncated to (5, 2, 9, 30), clipped to x 5-9, y 2-16: columns 5-8 of rows 2-11, 40 pixels. A
    box of zero width (7.2, 0, 7.9, 16) reads one column (7): 10 pixels. A box right of the image
    reads nothing; an empty mask gives 0."""
    masks = torch.zeros(2, 16, 20, dtype=torch.uint8)
    masks[0, 2:12, 4:14] = 1
    boxes = torch.tensor([[5.9, 2.7, 9.5, 30.0], [7.2, 0.0, 7.9, 16.0], [25.0, 0.0, 30.0, 5.0], [0.0, 0.0, 20.0, 16.0]])
    ratios = area_ratios(boxes, masks, torch.tensor([0, 0, 0, 1]))
    torch.testing.assert_close(ratios, torch.tensor([0.40, 0.10, 0.0, 0.0]), atol=1e-6, rtol=0)


def maskiou(num_classes: int = 3, channels: int = 4) -> MaskIoUHead:
    return MaskIoUHead(num_classes=num_classes, in_channels=channels, roi_feat_size=14, num_convs=4, num_fcs=2,
                       conv_out_channels=8, fc_out_channels=16, loss_weight=0.5, mask_thr_binary=0.5)


def test_iou_target_counts_the_whole_instance_and_thresholds_the_logits():
    """Prediction: logits 1.0 on the left half of a 4x4 RoI mask (8 pixels), 0.4 elsewhere (below
    MMDetection's 0.5 on the logits). Target in the RoI: the top half (8 pixels), half of the whole
    instance (ratio 0.5, so 16 pixels in all). Overlap 4: IoU 4 / (8 + 16 - 4) = 0.2."""
    pred = torch.full((1, 4, 4), 0.4)
    pred[0, :, :2] = 1.0
    target = torch.zeros(1, 4, 4)
    target[0, :2] = 1.0
    iou = maskiou().get_targets(pred, target, torch.tensor([0.5]))
    torch.testing.assert_close(iou, torch.tensor([0.2]))


def test_loss_is_half_the_mse_over_positive_targets():
    head = maskiou()
    pred = torch.tensor([0.5, 0.9, 0.1], requires_grad=True)
    loss = head.loss(pred, torch.tensor([0.7, 0.0, 0.4]))  # the second target (0) is left out
    torch.testing.assert_close(loss, torch.tensor(0.5 * ((0.5 - 0.7) ** 2 + (0.1 - 0.4) ** 2) / 2))
    loss.backward()
    assert pred.grad[1] == 0
    empty = head.loss(pred, torch.zeros(3))
    assert float(empty) == 0 and empty.requires_grad


def test_forward_pools_the_mask_probabilities_next_to_the_roi_features():
    """The first conv sees the RoI features and the 2x2 max-pooled sigmoid of the mask logits."""
    torch.manual_seed(0)
    head = maskiou(channels=2)
    seen = {}
    head.convs[0].register_forward_pre_hook(lambda m, args: seen.update(x=args[0].clone()) or None)
    feats, logits = torch.randn(3, 2, 14, 14), torch.randn(3, 28, 28)
    out = head(feats, logits)
    assert out.shape == (3, 3)
    torch.testing.assert_close(seen["x"][:, :2], feats)
    torch.testing.assert_close(seen["x"][:, 2], nn.functional.max_pool2d(logits.sigmoid(), 2))


def test_detection_scores_are_class_scores_times_the_predicted_iou_of_their_class():
    """With the MaskIoU head's output fixed to 0.5 / 0.25 / 1.0 ... per class (its last FC zero
    with those biases), every detection's score is the Mask R-CNN score times its class's value."""
    cfg = load_config(ROOT / "configs/ms_rcnn_r18_fpn_synth.yaml")
    torch.manual_seed(0)
    model = builder.build_model(cfg).eval()
    roi = model.roi_head
    assert isinstance(roi, MaskScoringRoIHead)
    per_class = torch.tensor([0.5, 0.25, 1.0, 0.75])
    with torch.no_grad():
        roi.mask_iou_head.fc_mask_iou.weight.zero_()
        roi.mask_iou_head.fc_mask_iou.bias.copy_(per_class)
    images = torch.randn(2, 3, 96, 128)
    feats, rpn_raw = model(images)
    shapes = torch.tensor([[96, 128], [96, 128]])
    props = model.rpn_head.proposals(rpn_raw, shapes, training=False)
    with torch.no_grad():
        plain = roi.box_detections(feats, props.num_dets, props.boxes, shapes)
        scored = roi.decode(feats, props.num_dets, props.boxes, shapes)
    valid = torch.arange(plain.scores.shape[1])[None] < plain.num_dets[:, None]
    assert valid.sum() > 0
    want = plain.scores * per_class[plain.labels.clamp(min=0).long()]
    torch.testing.assert_close(scored.scores[valid], want[valid])
    torch.testing.assert_close(scored.boxes, plain.boxes)
    assert scored.masks.shape[:2] == plain.boxes.shape[:2]


def test_training_adds_loss_mask_iou_connected_to_the_head():
    cfg = load_config(ROOT / "configs/ms_rcnn_r18_fpn_synth.yaml")
    torch.manual_seed(0)
    model = builder.build_model(cfg).train()
    masks = torch.zeros(1, 96, 128, dtype=torch.uint8)
    masks[0, 20:60, 30:90] = 1
    targets = [{"boxes": torch.tensor([[30.0, 20.0, 90.0, 60.0]]), "labels": torch.tensor([1]),
                "ignore_boxes": torch.zeros((0, 4)), "masks": masks}]
    meta = {"img_shape": (96, 128), "pad_shape": (96, 128), "ori_shape": (96, 128), "scale_factor": (1.0, 1.0)}
    losses = model.loss(torch.randn(1, 3, 96, 128), targets, [meta])
    assert {"loss_mask", "loss_mask_iou"} <= set(losses)
    losses["loss_mask_iou"].backward()
    assert model.roi_head.mask_iou_head.fc_mask_iou.weight.grad.abs().sum() > 0


def test_ms_rcnn_configs_are_mask_rcnns_plus_the_maskiou_head():
    """The Mask Scoring configs restate their Mask R-CNN base's RoI head (a new ``type`` starts the
    section afresh): every setting but the type and the MaskIoU head must still be the base's."""
    for ms, mask in (("ms_rcnn_r18_fpn_synth", "mask_rcnn_r18_fpn_synth"),
                     ("ms_rcnn_r50_fpn_1x_coco", "mask_rcnn_r50_fpn_1x_coco")):
        a, b = load_config(ROOT / f"configs/{ms}.yaml"), load_config(ROOT / f"configs/{mask}.yaml")
        fields = [f for f in vars(b.model.roi_head) if f != "type"]
        assert {f: getattr(a.model.roi_head, f) for f in fields} == {f: getattr(b.model.roi_head, f) for f in fields}
        assert a.model.rpn_head == b.model.rpn_head and a.train == b.train and a.data == b.data
