"""Module swaps that route trained layers through dettool ops in a deploy graph."""
from __future__ import annotations

import torch
from torch import nn

import dettool.ops  # noqa: F401  (registers torch.ops.dettool.*)
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack


class DeployDeformConv(nn.Module):
    """``DeformConv2dPack`` computed by ``dettool::modulated_deform_conv`` (DCN v1: a mask of ones).

    Shapes: ``[B, C, H, W]`` -> ``[B, C_out, H', W']``; the weights are the trained layer's.
    """

    def __init__(self, layer: DeformConv2dPack) -> None:
        super().__init__()
        self.conv_offset = layer.conv_offset
        self.weight = layer.weight
        self.bias = layer.bias
        self.num_offset = layer.num_offset
        self.modulated = layer.modulated
        pair = (lambda v: [v, v] if isinstance(v, int) else list(v))
        self.stride, self.padding, self.dilation = pair(layer.stride), pair(layer.padding), pair(layer.dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_offset(x)
        offset = out[:, : self.num_offset]
        taps = self.num_offset // 2
        mask = out[:, self.num_offset:].sigmoid() if self.modulated else torch.ones_like(offset[:, :taps])
        bias = self.bias if self.bias is not None else self.weight.new_zeros(self.weight.shape[0])
        deform_groups = self.num_offset // (2 * self.weight.shape[2] * self.weight.shape[3])
        groups = x.shape[1] // self.weight.shape[1]
        return torch.ops.dettool.modulated_deform_conv(x, offset, mask, self.weight, bias, self.stride, self.padding,
                                                       self.dilation, groups, deform_groups)


def replace_deform_convs(model: nn.Module) -> nn.Module:
    """Replace every ``DeformConv2dPack`` in ``model`` (in place) by a ``DeployDeformConv``; returns it."""
    for name, child in list(model.named_children()):
        if isinstance(child, DeformConv2dPack):
            setattr(model, name, DeployDeformConv(child))
        else:
            replace_deform_convs(child)
    return model
