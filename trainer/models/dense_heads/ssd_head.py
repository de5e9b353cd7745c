"""SSD head (Liu et al., 2016): per-level conv predictors, softmax classification with hard
negative mining, smooth-L1 box regression (MMDetection's ``SSDHead``)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.dense_heads.anchor_head import AnchorHead
from dettool.trainer.models.postprocess.batched import levels_to_rows


def hard_negative_sum(loss: torch.Tensor, labels: torch.Tensor, num_classes: int, neg_pos_ratio: int) -> torch.Tensor:
    """Per image, the summed loss of all positives and of the ``neg_pos_ratio x num_pos`` negatives
    with the highest loss (all negatives when there are fewer), summed over the batch.

    Args:
        loss: ``[B, N]`` per-anchor classification loss (already weighted; >= 0).
        labels: ``[B, N]`` in ``[0, C]``, ``num_classes`` (C) = background.
        num_classes: C.
        neg_pos_ratio: negatives kept per positive (SSD: 3).

    Returns: a scalar tensor.
    """
    pos = labels < num_classes
    neg = labels == num_classes
    num_neg = torch.minimum(pos.sum(1) * neg_pos_ratio, neg.sum(1))  # [B]
    ranked = torch.where(neg, loss, torch.full_like(loss, -1.0)).sort(dim=1, descending=True).values
    keep = torch.arange(loss.shape[1], device=loss.device)[None] < num_neg[:, None]
    return (loss * pos).sum() + (ranked * keep).sum()


def predictor(in_channels: int, out_channels: int, norm: str) -> nn.Sequential:
    """A level's 3x3 predictor conv; with ``norm`` 'bn' without bias and followed by a BatchNorm."""
    if norm == "bn":
        return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
                             nn.BatchNorm2d(out_channels))
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 3, padding=1))


class SSDHead(AnchorHead):
    """One 3x3 classification conv and one 3x3 box conv per level, not shared (levels differ in
    channels and anchors per location).

    Args:
        in_channels: channels of each input level (SSD300: ``(512, 1024, 512, 256, 256, 256)``).
        neg_pos_ratio: hard negatives kept per positive anchor.
        predictor_norm: 'none' (SSD) or 'bn': each predictor conv without bias and followed by a
            BatchNorm (``cls_convs.{l}.1``), ScratchDet's "BN on the detection head" for training
            from scratch (its code's ``SSDBNHead``).
        **kwargs: ``AnchorHead`` arguments (``num_classes``, ``anchor_generator``, ``bbox_coder``,
            ``assigner``, ``sampler``, ``loss_bbox`` (on deltas), ``allowed_border``, ``test_cfg``); the
            classification loss is this class's mined softmax cross-entropy.

    Test-time scores are the softmax over the C + 1 logits, background dropped (``AnchorDecoder``).

    Shapes: ``forward`` takes L maps ``[B, in_channels[l], H_l, W_l]`` and returns
    ``(cls_scores, bbox_preds)`` with ``[B, A_l * (C + 1), H_l, W_l]`` (background last) and
    ``[B, A_l * 4, H_l, W_l]``. Parameter names equal MMDetection's (``cls_convs.{l}.0.weight``).
    """

    softmax_scores = True

    def __init__(self, *, in_channels: tuple[int, ...], neg_pos_ratio: int, predictor_norm: str, **kwargs) -> None:
        super().__init__(in_channels=tuple(in_channels), loss_cls=None, reg_decoded_bbox=False, **kwargs)
        anchors_per_level = self.anchor_generator.num_base_anchors_per_level
        if len(anchors_per_level) != len(self.in_channels):
            raise ValueError(f"SSDHead: {len(self.in_channels)} input levels for {len(anchors_per_level)} anchor "
                             "levels")
        if predictor_norm not in ("none", "bn"):
            raise ValueError(f"SSDHead predictor_norm must be 'none' or 'bn', got {predictor_norm!r}")
        self.neg_pos_ratio = neg_pos_ratio
        self.cls_out_channels = self.num_classes + 1
        self.cls_convs = nn.ModuleList(predictor(c, a * self.cls_out_channels, predictor_norm)
                                       for c, a in zip(self.in_channels, anchors_per_level))
        self.reg_convs = nn.ModuleList(
            predictor(c, a * 4, predictor_norm) for c, a in zip(self.in_channels, anchors_per_level))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):  # MMDetection's init: Xavier uniform, zero bias
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores = [conv(f) for conv, f in zip(self.cls_convs, feats)]
        bbox_preds = [conv(f) for conv, f in zip(self.reg_convs, feats)]
        return cls_scores, bbox_preds

    def loss(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """Cross-entropy over positives and mined negatives, smooth L1 on the positives' deltas,
        both divided by the positives (each image counting at least 1; MMDetection's ``loss_by_feat``)."""
        cls_scores, bbox_preds = raw
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        _, labels, label_weights, box_targets, box_weights, avg = self.targets(sizes, targets, metas,
                                                                             cls_scores[0].device)
        cls = torch.cat([levels_to_rows(c, self.cls_out_channels) for c in cls_scores], 1)  # [B, N, C + 1]
        reg = torch.cat([levels_to_rows(r, 4) for r in bbox_preds], 1)  # [B, N, 4]
        ce = F.cross_entropy(cls.float().flatten(0, 1), labels.flatten(), reduction="none").view_as(labels)
        loss_cls = hard_negative_sum(ce * label_weights, labels, self.num_classes, self.neg_pos_ratio) / avg
        pos = box_weights[..., 0] > 0
        loss_bbox = self.loss_bbox(reg[pos], box_targets[pos], box_weights[pos], avg_factor=avg)
        return {"loss_cls": loss_cls, "loss_bbox": loss_bbox}
