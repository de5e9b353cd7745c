"""Guided Anchoring RPN (Wang et al., 2019, "Region Proposal by Guided Anchoring"): an RPN whose
one anchor per location is shaped by the shape branch and kept where the location branch finds an
object centre (MMDetection's ``GARPNHead``)."""
from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dettool.structures.detections import DetOutputs
from dettool.trainer.models.dense_heads.guided_anchor_head import FeatureAdaption, GuidedAnchorHead
from dettool.trainer.models.dense_heads.rpn_head import ProposalOutputs
from dettool.trainer.models.postprocess.guided_anchor_decoder import GuidedProposalDecoder
from dettool.trainer.models.postprocess.nms import ProposalSettings


class GARPNHead(ProposalOutputs, GuidedAnchorHead):
    """Per level: ``rpn_conv`` (3x3, ReLU), then on its features the location branch ``conv_loc``
    (1x1, one logit), the shape branch ``conv_shape`` (1x1, ``(dw, dh)``), the feature adaption
    (a 3x3 deformable conv with offsets from the shape prediction) and, on the adapted features,
    ``conv_cls`` (1x1, one objectness logit) and ``conv_reg`` (1x1, four deltas on the guided
    anchor). Trained as ``GuidedAnchorHead`` with every gt relabelled foreground; its proposals are
    :class:`GuidedProposalDecoder`'s.

    Args:
        feat_channels: channels of ``rpn_conv`` and of the adapted features.
        deform_groups: offset groups of the feature adaption.
        train_proposals, test_proposals: proposal decoding in training and at test time.
        **kwargs: ``GuidedAnchorHead`` arguments but ``num_classes`` and ``test_cfg``.

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns ``(cls_scores,
    bbox_preds, shape_preds, loc_preds)`` with ``[B, 1, H_l, W_l]``, ``[B, 4, H_l, W_l]``,
    ``[B, 2, H_l, W_l]`` and ``[B, 1, H_l, W_l]``.
    """

    def __init__(self, *, feat_channels: int, deform_groups: int, train_proposals: ProposalSettings,
                 test_proposals: ProposalSettings, loc_prior_prob: float = 0.01, **kwargs) -> None:
        super().__init__(num_classes=1, test_cfg=None, **kwargs)
        self.train_proposals, self.test_proposals = train_proposals, test_proposals
        self.rpn_conv = nn.Conv2d(self.in_channels, feat_channels, 3, padding=1)
        self.conv_loc = nn.Conv2d(feat_channels, 1, 1)
        self.conv_shape = nn.Conv2d(feat_channels, self.num_anchors * 2, 1)
        self.feature_adaption = FeatureAdaption(feat_channels, feat_channels, 3, deform_groups)
        self.conv_cls = nn.Conv2d(feat_channels, self.num_anchors, 1)
        self.conv_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 1)
        loc_bias = -math.log((1 - loc_prior_prob) / loc_prior_prob)
        for conv, bias in ((self.rpn_conv, 0.0), (self.conv_loc, loc_bias), (self.conv_shape, 0.0),
                           (self.conv_cls, 0.0), (self.conv_reg, 0.0)):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, bias)
        self.proposal_decoder = GuidedProposalDecoder(self.anchor_generator, self.anchor_coder, self.bbox_coder,
                                                      self.loc_filter_thr)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        cls_scores, bbox_preds, shape_preds, loc_preds = [], [], [], []
        for f in feats:
            x = F.relu(self.rpn_conv(f))
            shape = self.conv_shape(x)
            loc_preds.append(self.conv_loc(x))
            shape_preds.append(shape)
            x = self.feature_adaption(x, shape)
            cls_scores.append(self.conv_cls(x))
            bbox_preds.append(self.conv_reg(x))
        return cls_scores, bbox_preds, shape_preds, loc_preds

    def loss(self, raw: tuple[list[torch.Tensor], ...], targets: list[dict],
             metas: list[dict]) -> dict[str, torch.Tensor]:
        """``loss_rpn_cls`` / ``loss_rpn_bbox`` on the guided anchors, ``loss_anchor_shape`` and
        ``loss_anchor_loc`` (MMDetection's names); every gt counts as foreground."""
        fg_targets = [{**t, "labels": torch.zeros(t["boxes"].shape[0], dtype=torch.long, device=t["boxes"].device)}
                      for t in targets]
        losses = super().loss(raw, fg_targets, metas)
        return {"loss_rpn_cls": losses["loss_cls"], "loss_rpn_bbox": losses["loss_bbox"],
                "loss_anchor_shape": losses["loss_shape"], "loss_anchor_loc": losses["loss_loc"]}

    def proposals(self, raw: tuple[list[torch.Tensor], ...], image_shapes: torch.Tensor,
                  training: bool) -> DetOutputs:
        """Fixed-size proposals of the batch in input pixels, detached (``GuidedProposalDecoder``
        with ``train_proposals`` or ``test_proposals``)."""
        cfg = self.train_proposals if training else self.test_proposals
        return self.proposal_decoder(*[[t.detach() for t in part] for part in raw], image_shapes, cfg)
