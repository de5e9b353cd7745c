"""Guided Anchoring RetinaNet head (Wang et al., 2019): RetinaNet's towers, the location and shape
branches on them, feature adaption, then classification and box convs on the adapted features."""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.trainer.models.dense_heads.base_dense_head import conv_tower
from dettool.trainer.models.dense_heads.guided_anchor_head import FeatureAdaption, GuidedAnchorHead


class GARetinaHead(GuidedAnchorHead):
    """MMDetection's ``GARetinaHead``: per level, the classification tower feeds the location
    branch (1x1 conv, one logit) and the box tower the shape branch (1x1 conv, ``(dw, dh)``);
    each tower's features are adapted to the predicted shape (``FeatureAdaption``) before its 3x3
    output conv. The convs run at every location (MMDetection's test-time masked convs are the
    decoder's zeroed scores).

    Args:
        feat_channels: channels of the towers.
        stacked_convs: convs per tower.
        norm: 'none' | 'gn' | 'bn' in the towers.
        deform_groups: offset groups of the feature adaption.
        prior_prob: initial probability of the classifier and of the location branch (bias init).
        **kwargs: ``GuidedAnchorHead`` arguments.

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns ``(cls_scores,
    bbox_preds, shape_preds, loc_preds)`` with ``[B, C, H_l, W_l]``, ``[B, 4, H_l, W_l]``,
    ``[B, 2, H_l, W_l]`` and ``[B, 1, H_l, W_l]``.
    """

    def __init__(self, *, feat_channels: int, stacked_convs: int, norm: str, deform_groups: int,
                 prior_prob: float = 0.01, **kwargs) -> None:
        super().__init__(**kwargs)
        a = self.num_anchors
        self.cls_convs = conv_tower(self.in_channels, feat_channels, stacked_convs, norm)
        self.reg_convs = conv_tower(self.in_channels, feat_channels, stacked_convs, norm)
        self.conv_loc = nn.Conv2d(feat_channels, 1, 1)
        self.conv_shape = nn.Conv2d(feat_channels, a * 2, 1)
        self.feature_adaption_cls = FeatureAdaption(feat_channels, feat_channels, 3, deform_groups)
        self.feature_adaption_reg = FeatureAdaption(feat_channels, feat_channels, 3, deform_groups)
        self.retina_cls = nn.Conv2d(feat_channels, a * self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, a * 4, 3, padding=1)
        prior_bias = -math.log((1 - prior_prob) / prior_prob)
        for conv, bias in ((self.conv_loc, prior_bias), (self.conv_shape, 0.0), (self.retina_cls, prior_bias),
                           (self.retina_reg, 0.0)):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.constant_(conv.bias, bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], ...]:
        cls_scores, bbox_preds, shape_preds, loc_preds = [], [], [], []
        for x in feats:
            cls_feat, reg_feat = self.cls_convs(x), self.reg_convs(x)
            shape = self.conv_shape(reg_feat)
            loc_preds.append(self.conv_loc(cls_feat))
            shape_preds.append(shape)
            cls_scores.append(self.retina_cls(self.feature_adaption_cls(cls_feat, shape)))
            bbox_preds.append(self.retina_reg(self.feature_adaption_reg(reg_feat, shape)))
        return cls_scores, bbox_preds, shape_preds, loc_preds
