"""Several necks applied one after another (FPN, then a balanced-feature refinement for Libra R-CNN)."""
from __future__ import annotations

import torch
from torch import nn


class NeckSequence(nn.Module):
    """Applies ``necks`` in order; each takes the previous one's list of levels.

    Shapes: list of ``[B, C_i, H_i, W_i]`` -> the last neck's list of levels;
    ``out_channels`` is the last neck's (one int per output level).
    """

    def __init__(self, necks: list[nn.Module]) -> None:
        super().__init__()
        if not necks:
            raise ValueError("NeckSequence needs at least one neck")
        self.necks = nn.ModuleList(necks)
        self.out_channels = tuple(necks[-1].out_channels)

    def forward(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        for neck in self.necks:
            feats = neck(feats)
        return feats
