"""Several necks applied one after another (FPN, then a balanced-feature refinement for Libra R-CNN),
or none (R-FCN's heads read the backbone's levels)."""
from __future__ import annotations

import torch
from torch import nn


class NeckSequence(nn.Module):
    """Applies ``necks`` in order; each takes the previous one's list of levels. With no necks the
    levels pass unchanged.

    Shapes: list of ``[B, C_i, H_i, W_i]`` -> the last neck's list of levels;
    ``out_channels`` is the last neck's (one int per output level), or ``in_channels``.
    """

    def __init__(self, necks: list[nn.Module], in_channels: tuple[int, ...]) -> None:
        super().__init__()
        self.necks = nn.ModuleList(necks)
        self.out_channels = tuple(necks[-1].out_channels) if necks else tuple(in_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        for neck in self.necks:
            feats = neck(feats)
        return feats
