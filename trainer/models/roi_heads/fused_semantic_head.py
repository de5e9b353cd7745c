"""Hybrid Task Cascade's semantic segmentation branch (Chen et al., "Hybrid Task Cascade for
Instance Segmentation", CVPR 2019; MMDetection's ``FusedSemanticHead``): the FPN levels fused at
one level, a few convs, per-pixel class logits for a semantic loss, and an embedding whose RoI
features are added to the box and mask heads' RoI features."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from dettool.data.sample import IGNORE_LABEL


class ConvReLU(nn.Module):
    """A conv with bias and a ReLU (MMDetection's ``ConvModule`` without norm: ``conv``)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2)
        nn.init.kaiming_normal_(self.conv.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))


class FusedSemanticHead(nn.Module):
    """Every level (bilinearly resized, corners aligned, to the fusion level's size) through its own
    1x1 conv + ReLU and summed; ``num_convs`` 3x3 convs + ReLU; then a 1x1 conv to ``num_classes``
    logits and a 1x1 conv + ReLU to the semantic embedding.

    Args:
        num_ins: FPN levels read (5).
        fusion_level: the level whose size the fused map has (1: stride 8).
        in_channels: FPN channels.
        conv_out_channels: channels of the convs and the embedding.
        num_convs: 3x3 convs (4).
        num_classes: semantic classes (COCO-stuff: 183; the synthetic maps: 6).
        loss_weight: factor on the cross-entropy (0.2).
        seg_stride: the fusion level's stride; the label maps are subsampled by it for the loss.

    Shapes: ``forward(feats)`` (levels ``[B, C, H_l, W_l]``) -> ``(logits [B, num_classes, H_f, W_f],
    embedding [B, conv_out_channels, H_f, W_f])``.
    """

    def __init__(self, *, num_ins: int, fusion_level: int, in_channels: int, conv_out_channels: int, num_convs: int,
                 num_classes: int, loss_weight: float, seg_stride: int) -> None:
        super().__init__()
        if not 0 <= fusion_level < num_ins:
            raise ValueError(f"fusion_level must be one of the {num_ins} levels read, got {fusion_level}")
        self.num_ins, self.fusion_level = num_ins, fusion_level
        self.loss_weight, self.seg_stride = loss_weight, seg_stride
        self.lateral_convs = nn.ModuleList(ConvReLU(in_channels, in_channels, 1) for _ in range(num_ins))
        self.convs = nn.ModuleList(ConvReLU(in_channels if i == 0 else conv_out_channels, conv_out_channels, 3)
                                   for i in range(num_convs))
        self.conv_embedding = ConvReLU(conv_out_channels, conv_out_channels, 1)
        self.conv_logits = nn.Conv2d(conv_out_channels, num_classes, 1)
        nn.init.kaiming_normal_(self.conv_logits.weight, mode="fan_out", nonlinearity="relu")
        nn.init.zeros_(self.conv_logits.bias)

    def forward(self, feats: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.lateral_convs[self.fusion_level](feats[self.fusion_level])
        size = x.shape[-2:]
        for i, feat in enumerate(feats[: self.num_ins]):
            if i != self.fusion_level:
                x = x + self.lateral_convs[i](F.interpolate(feat, size=size, mode="bilinear", align_corners=True))
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(x), self.conv_embedding(x)

    def loss(self, logits: torch.Tensor, label_maps: list[torch.Tensor]) -> torch.Tensor:
        """``loss_semantic_seg``: cross-entropy of the logits ``[B, K, H_f, W_f]`` against each
        image's label map ``[H_i, W_i]`` padded with ``IGNORE_LABEL`` to ``seg_stride`` times the
        logits' size and subsampled by ``seg_stride`` (MMDetection's nearest resize by
        ``seg_scale_factor``), summed over the labelled pixels and divided by all pixels (MMDetection's
        ``avg_non_ignore=False``: the ignored ones count as 0), times ``loss_weight``."""
        h, w = logits.shape[-2] * self.seg_stride, logits.shape[-1] * self.seg_stride
        padded = logits.new_full((len(label_maps), h, w), IGNORE_LABEL, dtype=torch.long)
        for i, labels in enumerate(label_maps):
            lh, lw = min(labels.shape[0], h), min(labels.shape[1], w)
            padded[i, :lh, :lw] = labels[:lh, :lw].to(padded.device).long()
        targets = padded[:, :: self.seg_stride, :: self.seg_stride]
        if not bool((targets != IGNORE_LABEL).any()):
            return logits.sum() * 0
        total = F.cross_entropy(logits, targets, ignore_index=IGNORE_LABEL, reduction="sum")
        return self.loss_weight * total / targets.numel()
