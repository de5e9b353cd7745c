"""Weight-standardized convolution (Qiao et al. 2019, "Micro-Batch Training with Batch-Channel
Normalization and Weight Standardization"; mmcv's ``ConvWS2d``, MMDetection's ``conv_cfg=dict(type='ConvWS')``).

Each output channel's weights (``in_channels / groups * kh * kw`` values) are shifted to zero mean
and divided by their standard deviation before the convolution; with GroupNorm after it, this
lets detectors train from small per-GPU batches. As mmcv: the unbiased standard deviation
(``torch.std``'s default) and ``eps`` added to it, not to the variance.

The standardized weight depends on the weights only, so a trained ``ConvWS2d`` equals a plain
``nn.Conv2d`` holding it (:meth:`ConvWS2d.folded`); exporters fold it so that deploy graphs hold
plain convolutions.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F

from dettool.trainer.models.submodules import replace_submodules


def standardize_weight(weight: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(w - mean) / (std + eps)`` per output channel, mmcv's ``conv_ws_2d`` weight.

    Args:
        weight: ``Tensor[C_out, C_in / groups, kh, kw]`` (any memory format).
        eps: added to the unbiased standard deviation.

    Returns: ``Tensor[C_out, C_in / groups, kh, kw]``; each ``[i]`` has zero mean and (unbiased)
    standard deviation ``std_i / (std_i + eps)``.
    """
    flat = weight.flatten(1)  # not mmcv's view: a channels_last weight is not viewable
    shape = (weight.shape[0], 1, 1, 1)
    mean = flat.mean(dim=1, keepdim=True).view(shape)
    std = flat.std(dim=1, keepdim=True).view(shape)
    return (weight - mean) / (std + eps)


class ConvWS2d(nn.Conv2d):
    """An ``nn.Conv2d`` that convolves with its standardized weight (:func:`standardize_weight`).

    Args: those of ``nn.Conv2d`` (zero padding only), and ``eps`` added to each output channel's
    weight standard deviation. The parameters (``weight``, ``bias``) and their names are
    ``nn.Conv2d``'s, so plain-conv and MMDetection ``ConvWS`` weights load unchanged.

    Shapes: ``[B, C_in, H, W]`` -> ``[B, C_out, H', W']``, as ``nn.Conv2d``.
    """

    def __init__(self, *args, eps: float = 1e-5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if self.padding_mode != "zeros":
            raise ValueError(f"ConvWS2d supports zero padding only, got padding_mode={self.padding_mode!r}")
        self.eps = eps

    @classmethod
    def replacing(cls, conv: nn.Conv2d, eps: float = 1e-5) -> "ConvWS2d":
        """A weight-standardized conv of ``conv``'s geometry holding ``conv``'s parameters (the same
        ``Parameter`` objects: frozen stays frozen)."""
        ws = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                 dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None, eps=eps,
                 device=conv.weight.device, dtype=conv.weight.dtype)
        ws.weight, ws.bias = conv.weight, conv.bias
        return ws

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.conv2d(x, standardize_weight(self.weight, self.eps), self.bias, self.stride, self.padding,
                        self.dilation, self.groups)

    def folded(self) -> nn.Conv2d:
        """The plain ``nn.Conv2d`` computing the same: the standardized weight as its weight
        (detached, a copy), the same bias."""
        conv = nn.Conv2d(self.in_channels, self.out_channels, self.kernel_size, stride=self.stride,
                         padding=self.padding, dilation=self.dilation, groups=self.groups, bias=self.bias is not None,
                         device=self.weight.device, dtype=self.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(standardize_weight(self.weight, self.eps))
            if self.bias is not None:
                conv.bias.copy_(self.bias)
        return conv.train(self.training)


def standardize_convs(module: nn.Module, select: Callable[[str], bool] = lambda name: True) -> nn.Module:
    """Replace, in place, each plain ``nn.Conv2d`` of ``module`` whose qualified name passes
    ``select`` by a :class:`ConvWS2d` holding its parameters; returns ``module``.

    Subclasses of ``nn.Conv2d`` (already standardized convs among them) and other conv modules
    (deformable convs) are left as they are; plain convs inside them (a deformable conv's offset
    conv) are not, unless ``select`` leaves them out.
    """
    return replace_submodules(module, lambda name, m: bool(name) and type(m) is nn.Conv2d and select(name),
                              ConvWS2d.replacing, what="the conv")
