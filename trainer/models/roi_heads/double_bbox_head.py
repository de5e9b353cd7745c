"""Double-Head R-CNN's box head (Wu et al. 2019, "Rethinking Classification and Localization for
Object Detection"; MMDetection's ``DoubleConvFCBBoxHead``): FCs classify, convs regress.

The fc branch classifies the RoI's features; the conv branch (a residual block widening the
features to ``conv_out_channels``, then ``num_convs`` ResNet bottlenecks and global average
pooling) regresses from the features of the same RoI enlarged around its centre (the RoI head
pools them with ``roi_scale_factor``).
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torchvision.models.resnet import Bottleneck

from dettool.trainer.models.roi_heads.bbox_head import BBoxHead

NORMS: dict[str, Callable[[int], nn.Module]] = {"bn": nn.BatchNorm2d, "gn": lambda c: nn.GroupNorm(32, c)}


class ConvNorm(nn.Module):
    """Conv (no bias), norm, optional ReLU; the norm is named ``bn`` or ``gn`` as mmcv's
    ``ConvModule`` names it, so MMDetection's state dicts map onto it key for key."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, norm: str, relu: bool) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm_name = norm
        self.add_module(norm, NORMS[norm](out_channels))
        self.relu = nn.ReLU(inplace=True) if relu else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(getattr(self, self.norm_name)(self.conv(x)))


class BasicResBlock(nn.Module):
    """``relu(conv2(conv1(x)) + conv_identity(x))``, widening ``in_channels`` to ``out_channels``
    (MMDetection's ``BasicResBlock``: ``conv1`` 3x3 + norm + ReLU, ``conv2`` and the identity
    branch 1x1 + norm)."""

    def __init__(self, in_channels: int, out_channels: int, norm: str) -> None:
        super().__init__()
        self.conv1 = ConvNorm(in_channels, in_channels, 3, norm, relu=True)
        self.conv2 = ConvNorm(in_channels, out_channels, 1, norm, relu=False)
        self.conv_identity = ConvNorm(in_channels, out_channels, 1, norm, relu=False)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.conv2(self.conv1(x)) + self.conv_identity(x))


class DoubleConvFCBBoxHead(BBoxHead):
    """Classification from ``num_fcs`` FCs, regression from a residual block and ``num_convs`` bottlenecks.

    Args:
        in_channels: channels of the pooled RoI features.
        roi_feat_size: side S of the pooled RoI features.
        num_convs: bottlenecks of the conv (regression) branch (MMDetection: 4).
        num_fcs: FC layers of the fc (classification) branch (2).
        conv_out_channels: width of the conv branch (1024; bottleneck width a quarter of it).
        fc_out_channels: width of the FCs (1024).
        norm: ``'bn'`` or ``'gn'`` in the conv branch.
        **kwargs: ``BBoxHead`` arguments.

    Shapes: ``forward(cls_feats [R, in_channels, S, S], reg_feats [R, in_channels, S, S])`` ->
    ``cls_score [R, C + 1]`` and ``bbox_pred [R, 4]`` or ``[R, 4 * C]``.
    """

    def __init__(self, *, in_channels: int, roi_feat_size: int, num_convs: int, num_fcs: int, conv_out_channels: int,
                 fc_out_channels: int, norm: str, **kwargs) -> None:
        super().__init__(**kwargs)
        if norm not in NORMS:
            raise ValueError(f"DoubleConvFCBBoxHead norm must be one of {sorted(NORMS)}, got {norm!r}")
        self.in_channels, self.roi_feat_size = in_channels, roi_feat_size
        self.res_block = BasicResBlock(in_channels, conv_out_channels, norm)
        self.conv_branch = nn.Sequential(*(Bottleneck(conv_out_channels, conv_out_channels // 4,
                                                      norm_layer=NORMS[norm]) for _ in range(num_convs)))
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.fc_reg = nn.Linear(conv_out_channels, self.reg_out_channels)
        dims = [in_channels * roi_feat_size * roi_feat_size] + [fc_out_channels] * num_fcs
        self.fc_branch = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.fc_cls = nn.Linear(fc_out_channels, self.num_classes + 1)
        self.relu = nn.ReLU(inplace=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        for fc in self.fc_branch:
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.init_predictors(self.fc_cls, self.fc_reg)

    def forward(self, cls_feats: torch.Tensor, reg_feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Raw predictions: ``cls_score`` from ``cls_feats``, ``bbox_pred`` from ``reg_feats``."""
        x_conv = self.avg_pool(self.conv_branch(self.res_block(reg_feats))).flatten(1)
        bbox_pred = self.fc_reg(x_conv)
        x_fc = cls_feats.flatten(1)
        for fc in self.fc_branch:
            x_fc = self.relu(fc(x_fc))
        return self.fc_cls(x_fc), bbox_pred
