"""RetinaNet head (Lin et al., 2017): two conv towers, A anchors per location."""
from __future__ import annotations

import math

import torch
from torch import nn

from dettool.trainer.models.dense_heads.anchor_head import AnchorHead
from dettool.trainer.models.dense_heads.base_dense_head import conv_tower


class RetinaHead(AnchorHead):
    """Classification and box towers shared over levels.

    Args:
        feat_channels: channels of the towers.
        stacked_convs: convs per tower.
        norm: 'none' | 'gn' | 'bn' in the towers (GN helps training from scratch).
        prior_prob: initial foreground probability of the classifier (bias init).
        **kwargs: ``AnchorHead`` arguments.

    Shapes: ``forward`` takes L maps ``[B, in_channels, H_l, W_l]`` and returns
    ``(cls_scores, bbox_preds)`` with ``[B, A * C, H_l, W_l]`` and ``[B, A * 4, H_l, W_l]``.
    """

    def __init__(self, *, feat_channels: int, stacked_convs: int, norm: str, prior_prob: float = 0.01,
                 **kwargs) -> None:
        super().__init__(**kwargs)
        self.num_anchors = self.anchor_generator.num_base_anchors
        self.cls_convs = conv_tower(self.in_channels, feat_channels, stacked_convs, norm)
        self.reg_convs = conv_tower(self.in_channels, feat_channels, stacked_convs, norm)
        self.retina_cls = nn.Conv2d(feat_channels, self.num_anchors * self.num_classes, 3, padding=1)
        self.retina_reg = nn.Conv2d(feat_channels, self.num_anchors * 4, 3, padding=1)
        nn.init.normal_(self.retina_cls.weight, std=0.01)
        nn.init.constant_(self.retina_cls.bias, -math.log((1 - prior_prob) / prior_prob))
        nn.init.normal_(self.retina_reg.weight, std=0.01)
        nn.init.zeros_(self.retina_reg.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        cls_scores = [self.retina_cls(self.cls_convs(f)) for f in feats]
        bbox_preds = [self.retina_reg(self.reg_convs(f)) for f in feats]
        return cls_scores, bbox_preds
