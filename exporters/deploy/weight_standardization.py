"""Deploy-graph step: weight-standardized convs -> plain convs holding their standardized weights.

A ``ConvWS2d`` recomputes each output channel's weight mean and standard deviation on every call;
at deployment the weights are constants, so each one becomes the ``nn.Conv2d`` it equals
(``ConvWS2d.folded``) and the ONNX graph holds plain ``Conv`` nodes on constant weights, no weight
statistics (``ReduceMean``, ``Sqrt``, ...).
"""
from __future__ import annotations

from torch import nn

from dettool.trainer.models.backbones.conv_ws import ConvWS2d
from dettool.trainer.models.submodules import replace_submodules


def fold_weight_standardization(model: nn.Module) -> nn.Module:
    """Replace, in place, every ``ConvWS2d`` of ``model`` by its folded ``nn.Conv2d``; returns ``model``.

    The outputs are unchanged (the same convolution with the weight the ``ConvWS2d`` computes);
    the folded weights are copies, detached from the model's parameters.
    """
    return replace_submodules(model, lambda name, m: isinstance(m, ConvWS2d), ConvWS2d.folded, what="the conv")
