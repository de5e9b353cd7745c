"""Region Proposal Network head (Ren et al., Faster R-CNN), MMDetection v2's ``RPNHead``.

One shared 3x3 conv, then per anchor a single foreground logit (sigmoid) and four deltas. The
losses are the anchor head's, with every ground truth relabelled foreground (label 0).
``predict_proposals`` feeds a RoI head (resized-image pixels); ``predict`` returns the same
proposals as ``Detections`` in original pixels so that an RPN is evaluated like any detector.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import batched_nms

from dettool.trainer.models.dense_heads.anchor_head import AnchorHead
from dettool.trainer.models.dense_heads.base_dense_head import levels_to_rows
from dettool.trainer.models.losses.reduction import weight_reduce
from dettool.trainer.models.losses.smooth_l1_loss import SmoothL1Loss
from dettool.trainer.models.structures import Detections
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.samplers import PseudoSampler, RandomSampler


@dataclass(frozen=True)
class ProposalSettings:
    """How proposals are decoded (MMDetection v2's ``rpn`` test settings).

    Attributes:
        nms_pre: highest-scoring anchors kept per level before NMS; <= 0 keeps all.
        nms_iou_thr: IoU threshold of the NMS (run independently per level, as MMDetection v2).
        max_per_img: proposals kept per image after NMS, highest scores first.
        min_bbox_size: boxes whose width or height is not larger than this are dropped.
    """

    nms_pre: int = 1000
    nms_iou_thr: float = 0.7
    max_per_img: int = 1000
    min_bbox_size: float = 0.0


class SigmoidBinaryLoss(nn.Module):
    """Sigmoid cross-entropy against one-hot labels (MMDetection's ``CrossEntropyLoss(use_sigmoid=True)``).

    Adapts ``F.binary_cross_entropy_with_logits`` to the anchor head's classification call: labels
    ``[N]`` in ``[0, C]`` with C = background, so with C = 1 (the RPN) label 0 is the target 1.

    Args:
        weight: loss weight.
    """

    def __init__(self, weight: float = 1.0) -> None:
        super().__init__()
        self.weight = weight

    def forward(self, logits: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None,
                avg_factor: float | torch.Tensor | None = None) -> torch.Tensor:
        """Args: ``logits`` ``[N, C]``; ``labels`` ``[N]`` in ``[0, C]``; ``weight`` ``[N]``. Returns a scalar."""
        num_classes = logits.shape[1]
        onehot = torch.zeros_like(logits, dtype=torch.float32)
        fg = labels < num_classes
        onehot[fg.nonzero(as_tuple=True)[0], labels[fg]] = 1.0
        loss = F.binary_cross_entropy_with_logits(logits.float(), onehot, reduction="none")
        if weight is not None:
            weight = weight.float()[:, None]
        return self.weight * weight_reduce(loss, weight, avg_factor)


def default_rpn_anchor_generator() -> AnchorGenerator:
    """MMDetection v2's RPN anchors: strides 4..64, ratios (0.5, 1, 2), one scale of 8 strides."""
    return AnchorGenerator(strides=(4, 8, 16, 32, 64), ratios=(0.5, 1.0, 2.0), octave_base_scale=8.0,
                           scales_per_octave=1)


class RPNHead(AnchorHead):
    """Class-agnostic proposal head: ``rpn_conv`` (3x3, ReLU), ``rpn_cls`` (1x1, A logits) and
    ``rpn_reg`` (1x1, A x 4 deltas), shared over levels. ``None`` arguments take MMDetection v2's
    defaults.

    Args:
        in_channels: channels of each input level.
        feat_channels: channels of ``rpn_conv``.
        anchor_generator: anchors per level (default: ``default_rpn_anchor_generator()``).
        bbox_coder: delta coder (default: means 0, stds 1).
        assigner: default ``MaxIoUAssigner(pos 0.7, neg 0.3, min_pos_iou 0.3, ignore_iof_thr -1)``.
        sampler: default ``RandomSampler(num 256, pos_fraction 0.5, neg_pos_ub -1)``.
        loss_cls: default ``SigmoidBinaryLoss()`` (sigmoid cross-entropy, weight 1).
        loss_bbox: default ``SmoothL1Loss(beta=1/9)`` (the MMDetection paper's RPN ``smoothL1_beta``).
        allowed_border: anchors crossing the image by more than this are not trained; -1 = no limit.
        reg_decoded_bbox: regress decoded boxes (forced for IoU-type losses).
        proposal_cfg: default proposal decoding for ``predict_proposals`` and ``predict``.

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns
    ``(cls_scores, bbox_preds)`` with ``[B, A, H_l, W_l]`` and ``[B, A * 4, H_l, W_l]``.
    """

    def __init__(self, in_channels: int, *, feat_channels: int = 256, anchor_generator: AnchorGenerator | None = None,
                 bbox_coder: DeltaXYWHCoder | None = None, assigner: MaxIoUAssigner | None = None,
                 sampler: PseudoSampler | RandomSampler | None = None, loss_cls: nn.Module | None = None,
                 loss_bbox: nn.Module | None = None, allowed_border: int = -1, reg_decoded_bbox: bool = False,
                 proposal_cfg: ProposalSettings = ProposalSettings()) -> None:
        super().__init__(
            num_classes=1, in_channels=in_channels,
            anchor_generator=anchor_generator if anchor_generator is not None else default_rpn_anchor_generator(),
            bbox_coder=bbox_coder if bbox_coder is not None else DeltaXYWHCoder(),
            assigner=(assigner if assigner is not None
                      else MaxIoUAssigner(0.7, 0.3, min_pos_iou=0.3, ignore_iof_thr=-1.0)),
            sampler=sampler if sampler is not None else RandomSampler(256, 0.5, neg_pos_ub=-1.0),
            loss_cls=loss_cls if loss_cls is not None else SigmoidBinaryLoss(),
            loss_bbox=loss_bbox if loss_bbox is not None else SmoothL1Loss(beta=1 / 9),
            allowed_border=allowed_border, reg_decoded_bbox=reg_decoded_bbox)
        self.feat_channels = feat_channels
        self.proposal_cfg = proposal_cfg
        self.rpn_conv = nn.Conv2d(in_channels, feat_channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        for m in (self.rpn_conv, self.rpn_cls, self.rpn_reg):
            nn.init.normal_(m.weight, std=0.01)
            nn.init.zeros_(m.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per level: objectness logits ``[B, A, H_l, W_l]`` and deltas ``[B, A * 4, H_l, W_l]``."""
        cls_scores, bbox_preds = [], []
        for f in feats:
            x = F.relu(self.rpn_conv(f))
            cls_scores.append(self.rpn_cls(x))
            bbox_preds.append(self.rpn_reg(x))
        return cls_scores, bbox_preds

    def loss(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """Objectness and box losses; every gt (``boxes`` ``[G, 4]``) counts as foreground.

        Returns ``{'loss_rpn_cls', 'loss_rpn_bbox'}``, both normalised by the sampled anchors.
        """
        fg_targets = [{**t, "labels": torch.zeros(t["boxes"].shape[0], dtype=torch.long, device=t["boxes"].device)}
                      for t in targets]
        losses = super().loss(raw, fg_targets, metas)
        return {"loss_rpn_cls": losses["loss_cls"], "loss_rpn_bbox": losses["loss_bbox"]}

    @torch.no_grad()
    def predict_proposals(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], metas: list[dict],
                          cfg: ProposalSettings | None = None) -> list[torch.Tensor]:
        """Proposals per image for a RoI head, detached, in resized-image pixels.

        Per level the ``nms_pre`` best anchors are decoded (clipped to ``img_shape``); boxes not
        larger than ``min_bbox_size`` are dropped; NMS runs per level (level index as the
        ``batched_nms`` group, as MMDetection v2) and the ``max_per_img`` best survive.

        Args:
            raw: ``forward`` output for B images.
            metas: per image, at least ``img_shape`` (h, w).
            cfg: decoding settings; default ``self.proposal_cfg``.

        Returns: B tensors ``[K, 5]`` (x1, y1, x2, y2, objectness in [0, 1]) sorted by score,
        K <= ``max_per_img``.
        """
        cfg = cfg if cfg is not None else self.proposal_cfg
        cls_scores, bbox_preds = raw
        sizes = [tuple(c.shape[-2:]) for c in cls_scores]
        anchors = self.anchor_generator.grid_anchors(sizes, cls_scores[0].device)
        results = []
        for i, meta in enumerate(metas):
            boxes_l, scores_l, levels_l = [], [], []
            for lvl, (c, r) in enumerate(zip(cls_scores, bbox_preds)):
                scores = levels_to_rows(c[i:i + 1], 1)[0, :, 0].float().sigmoid()
                deltas = levels_to_rows(r[i:i + 1], 4)[0]
                a = anchors[lvl]
                if 0 < cfg.nms_pre < scores.shape[0]:
                    scores, top = scores.topk(cfg.nms_pre)
                    deltas, a = deltas[top], a[top]
                boxes_l.append(self.bbox_coder.decode(a, deltas, max_shape=meta["img_shape"]))
                scores_l.append(scores)
                levels_l.append(torch.full_like(scores, lvl, dtype=torch.long))
            boxes, scores, levels = torch.cat(boxes_l), torch.cat(scores_l), torch.cat(levels_l)
            w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
            valid = (w > cfg.min_bbox_size) & (h > cfg.min_bbox_size)
            boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
            keep = batched_nms(boxes, scores, levels, cfg.nms_iou_thr)[: cfg.max_per_img]
            results.append(torch.cat([boxes[keep], scores[keep, None]], dim=1))
        return results

    @torch.no_grad()
    def predict(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], metas: list[dict]) -> list[Detections]:
        """Proposals as ``Detections`` (label 0) in original-image pixels, for evaluation."""
        out = []
        for props, meta in zip(self.predict_proposals(raw, metas), metas):
            labels = torch.zeros(props.shape[0], dtype=torch.long, device=props.device)
            out.append(self.to_detections(props[:, :4], props[:, 4], labels, meta))
        return out
