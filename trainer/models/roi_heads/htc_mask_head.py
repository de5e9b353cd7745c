"""Hybrid Task Cascade's mask head (MMDetection's ``HTCMaskHead``): an FCN mask head whose stages
pass their features on (the mask information flow)."""
from __future__ import annotations

import torch

from dettool.trainer.models.roi_heads.fused_semantic_head import ConvReLU
from dettool.trainer.models.roi_heads.mask_head import FCNMaskHead


class HTCMaskHead(FCNMaskHead):
    """``FCNMaskHead`` whose conv features can be handed to the next stage's head: with
    ``with_conv_res`` the previous stage's features pass a 1x1 conv + ReLU (``conv_res``) and are
    added to the RoI features before the convs (the first stage has none).

    Args:
        with_conv_res: this head takes the previous stage's features.
        **kwargs: ``FCNMaskHead`` arguments.

    Shapes: ``features(roi_feats [R, C, S, S], previous [R, C', S, S] | None)`` -> ``[R, C', S, S]``;
    ``logits(features)`` -> ``[R, classes, 2S, 2S]``.
    """

    def __init__(self, *, with_conv_res: bool, **kwargs) -> None:
        super().__init__(**kwargs)
        channels = self.upsample.in_channels
        self.conv_res = ConvReLU(channels, channels, 1) if with_conv_res else None

    def features(self, roi_feats: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """The conv features of RoIs, given the previous stage's (None for none)."""
        if previous is not None:
            if self.conv_res is None:
                raise ValueError("this HTC mask head takes no previous stage's features (with_conv_res: false)")
            roi_feats = roi_feats + self.conv_res(previous)
        return self.convs(roi_feats)

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """Mask logits of conv features (the deconv, ReLU and 1x1 classifier)."""
        return self.conv_logits(self.relu(self.upsample(features)))
