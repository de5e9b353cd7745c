"""Region Proposal Network head (Ren et al., Faster R-CNN), MMDetection v2's ``RPNHead``.

One shared 3x3 conv, then per anchor a single foreground logit (sigmoid) and four deltas. The
losses are the anchor head's, with every ground truth relabelled foreground (label 0).
``proposals`` feeds a RoI head (resized-image pixels, fixed size); ``decode`` / ``predict``
return the test-time proposals as class-0 detections so that an RPN is evaluated like any
detector.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.structures.detections import DetOutputs, image_shapes_tensor
from dettool.trainer.models.dense_heads.anchor_head import AnchorHead
from dettool.trainer.models.postprocess.dense_decoders import ProposalDecoder
from dettool.trainer.models.postprocess.nms import ProposalSettings
from dettool.trainer.models.task_modules.anchor_generator import AnchorGenerator
from dettool.trainer.models.task_modules.delta_xywh_coder import DeltaXYWHCoder
from dettool.trainer.models.task_modules.max_iou_assigner import MaxIoUAssigner
from dettool.trainer.models.task_modules.samplers import RandomSampler


class ProposalOutputs:
    """What a proposal head (``RPNHead``, ``GARPNHead``) derives from its ``proposals(raw,
    image_shapes, training)``: the per-image list a RoI head trains on, and the test-time
    proposals as class-0 detections."""

    def proposal_list(self, raw: tuple[list[torch.Tensor], ...], metas: list[dict],
                      training: bool) -> list[torch.Tensor]:
        """``proposals`` cut per image: B tensors ``[K_i, 5]`` (x1, y1, x2, y2, objectness)."""
        out = self.proposals(raw, image_shapes_tensor(metas, device=raw[0][0].device), training)
        return [torch.cat([out.boxes[i, :n], out.scores[i, :n, None]], dim=1)
                for i, n in enumerate(out.num_dets.tolist())]

    def decode(self, raw: tuple[list[torch.Tensor], ...], image_shapes: torch.Tensor) -> DetOutputs:
        """The test-time proposals as class-0 detections (an RPN evaluated alone)."""
        out = self.proposals(raw, image_shapes, training=False)
        return out._replace(labels=torch.where(out.labels >= 0, torch.zeros_like(out.labels), out.labels))


class RPNHead(ProposalOutputs, AnchorHead):
    """Class-agnostic proposal head: ``rpn_conv`` (3x3, ReLU), ``rpn_cls`` (1x1, A logits) and
    ``rpn_reg`` (1x1, A x 4 deltas), shared over levels.

    Args:
        in_channels: channels of each input level.
        feat_channels: channels of ``rpn_conv``.
        num_convs: 3x3 convs (each with ReLU) before the two outputs (MMDetection's ``num_convs``,
            torchvision's ``conv_depth``); with more than one, ``rpn_conv`` is a Sequential.
        anchor_generator, bbox_coder, assigner, sampler: anchors and their targets.
        loss_cls: objectness loss on logits ``[N, 1]`` and labels ``[N]`` (0 = object, 1 = background).
        loss_bbox: regression loss (smooth L1 with the paper's ``smoothL1_beta`` 1/9 in MMDetection).
        allowed_border: anchors crossing the image by more than this are not trained; -1 = no limit.
        reg_decoded_bbox: regress decoded boxes (forced for losses on decoded boxes).
        train_proposals: proposal decoding for the RoI head in training.
        test_proposals: proposal decoding at test time (and of ``decode`` / ``predict``).

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns
    ``(cls_scores, bbox_preds)`` with ``[B, A, H_l, W_l]`` and ``[B, A * 4, H_l, W_l]``.
    """

    def __init__(self, *, in_channels: int, feat_channels: int, anchor_generator: AnchorGenerator,
                 bbox_coder: DeltaXYWHCoder, assigner: MaxIoUAssigner, sampler: RandomSampler, loss_cls: nn.Module,
                 loss_bbox: nn.Module, allowed_border: int, reg_decoded_bbox: bool,
                 train_proposals: ProposalSettings, test_proposals: ProposalSettings, num_convs: int = 1) -> None:
        super().__init__(num_classes=1, in_channels=in_channels, anchor_generator=anchor_generator,
                         bbox_coder=bbox_coder, assigner=assigner, sampler=sampler, loss_cls=loss_cls,
                         loss_bbox=loss_bbox, allowed_border=allowed_border, reg_decoded_bbox=reg_decoded_bbox,
                         test_cfg=None)
        self.num_anchors = anchor_generator.num_base_anchors
        self.feat_channels = feat_channels
        self.train_proposals, self.test_proposals = train_proposals, test_proposals
        self.proposal_decoder = ProposalDecoder(anchor_generator, bbox_coder)
        convs = [nn.Conv2d(in_channels if i == 0 else feat_channels, feat_channels, 3, padding=1)
                 for i in range(num_convs)]
        # the last ReLU is forward's: one conv keeps MMDetection's parameter names (rpn_conv.weight)
        self.rpn_conv = convs[0] if num_convs == 1 else nn.Sequential(
            *[m for conv in convs[:-1] for m in (conv, nn.ReLU())], convs[-1])
        self.rpn_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.rpn_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        for m in (*convs, self.rpn_cls, self.rpn_reg):
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

    def proposals(self, raw: tuple[list[torch.Tensor], list[torch.Tensor]], image_shapes: torch.Tensor,
                  training: bool) -> DetOutputs:
        """Fixed-size proposals of the batch in input pixels, detached (``ProposalDecoder``).

        Per level the ``nms_pre`` best anchors are decoded (clipped to the image); boxes not
        larger than ``min_bbox_size`` are dropped; NMS runs per level and the ``max_per_img``
        best survive, sorted by objectness. ``labels`` holds each proposal's level.

        Args:
            raw: ``forward`` output for B images.
            image_shapes: ``Tensor[B, 2]`` (h, w) of each unpadded image.
            training: use ``train_proposals`` (else ``test_proposals``).
        """
        cls_scores, bbox_preds = raw
        cfg = self.train_proposals if training else self.test_proposals
        return self.proposal_decoder([c.detach() for c in cls_scores], [r.detach() for r in bbox_preds],
                                     image_shapes, cfg)
