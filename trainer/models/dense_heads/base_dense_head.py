"""What every dense head shares: conv towers and the head contract.

Head contract (STYLE.md): ``forward(features) -> raw tensors`` (exportable, no Python data
structures), ``loss(raw, targets, metas) -> {'loss_*': Tensor}``, ``decode(raw, image_shapes)
-> DetOutputs`` (batched, fixed-size: the one test-time path, also traced into deploy graphs)
and ``predict(raw, metas) -> list[Detections]`` in original-image pixels, which is ``decode``
followed by ``outputs_to_detections``.
"""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import Detections, DetOutputs, image_shapes_tensor, outputs_to_detections


def conv_tower(in_channels: int, feat_channels: int, num_convs: int, norm: str,
               conv_bias: bool | None = None) -> nn.Sequential:
    """``num_convs`` x (3x3 conv, optional GN/BN, ReLU); the convs have a bias when ``conv_bias``,
    or (None, MMDetection's 'auto') when there is no norm."""
    bias = norm == "none" if conv_bias is None else conv_bias
    layers: list[nn.Module] = []
    for i in range(num_convs):
        cin = in_channels if i == 0 else feat_channels
        layers.append(nn.Conv2d(cin, feat_channels, 3, padding=1, bias=bias))
        if norm == "gn":
            layers.append(nn.GroupNorm(min(32, feat_channels), feat_channels))
        elif norm == "bn":
            layers.append(nn.BatchNorm2d(feat_channels))
        layers.append(nn.ReLU(inplace=True))
    for m in layers:
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=0.01)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return nn.Sequential(*layers)


class BaseDenseHead(nn.Module):
    """Common interface; subclasses implement ``forward``, ``loss`` and ``decode``."""

    def __init__(self, num_classes: int, in_channels: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.in_channels = in_channels

    def decode(self, raw: tuple, image_shapes: torch.Tensor) -> DetOutputs:
        """Fixed-size detections of the batch in input pixels from ``forward``'s output.

        Args:
            raw: ``forward``'s output for B images.
            image_shapes: ``Tensor[B, 2]`` (h, w) of each unpadded image (boxes are clipped to it).
        """
        raise NotImplementedError

    @torch.no_grad()
    def predict(self, raw: tuple, metas: list[dict]) -> list[Detections]:
        """Detections per image in original-image pixels (``decode`` + ``outputs_to_detections``)."""
        shapes = image_shapes_tensor(metas, device=raw[0][0].device)
        return outputs_to_detections(self.decode(raw, shapes), metas)
