"""Generalized attention, a stage plugin placed after a residual block's 3x3 conv.

Zhu et al., "An Empirical Study of Spatial Attention Mechanisms in Deep Networks" (2019): the
attention a query position ``q`` pays to a key position ``k`` is a sum of up to four terms, chosen
by a 4-character switch string (``attention_type``):

- ``1000`` query and key content: ``(W_q x_q) . (W_k x_k)``
- ``0100`` query content and relative position: ``(W_q x_q) . V(R_{k - q})``
- ``0010`` key content only: ``u . (W_k x_k)`` (a learnt ``appr_bias``; the same map for every query)
- ``0001`` relative position only: ``v . V(R_{k - q})`` (a learnt ``geom_bias``)

``R`` is a sinusoidal embedding of the row and column offsets (each half of the embedding for one
axis, mapped by ``appr_geom_fc_y`` / ``appr_geom_fc_x``). Keys and values are subsampled by
``kv_stride``, queries by ``q_stride`` (the output then upsampled bilinearly), and the result is
added to the input scaled by ``gamma`` (0 at first: a new block is the identity). Parameter names
are mmcv's ``GeneralizedAttention``'s, so MMDetection checkpoints load by name, and the outputs
are mmcv's for every type but those with the second switch on and the fourth off ('0100',
'1100', ...), where mmcv adds the row-offset term with the queries transposed (dettool computes
the sum above; ``dettool convert`` refuses those types). mmcv's ``spatial_range`` is not
implemented. The embeddings are computed from the runtime size of the input, so one exported
graph serves every input size.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

WAVE_LENGTH = 1000.0  # the longest sinusoid's period of the position embedding (mmcv's wave_length)


def relative_position_embedding(size_q: int, size_kv: int, q_stride: int, kv_stride: int, magnitude: int, dim: int,
                                *, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """Sinusoidal embedding of the offsets between query and key positions along one axis.

    Query ``i`` sits at ``i * q_stride`` and key ``j`` at ``j * kv_stride`` of the input; the offset
    ``(i * q_stride - j * kv_stride) * magnitude`` is embedded as ``dim / 4`` sines then ``dim / 4``
    cosines of periods ``2 pi * WAVE_LENGTH ** (4 k / dim)``.

    Returns:
        ``[size_q, size_kv, dim / 2]``.
    """
    q = torch.arange(size_q, device=device, dtype=dtype) * q_stride
    kv = torch.arange(size_kv, device=device, dtype=dtype) * kv_stride
    offsets = (q[:, None] - kv[None, :]) * magnitude  # [size_q, size_kv]
    exponents = torch.arange(dim // 4, device=device, dtype=dtype) * (4.0 / dim)
    angles = offsets[:, :, None] / WAVE_LENGTH ** exponents  # [size_q, size_kv, dim / 4]
    return torch.cat([angles.sin(), angles.cos()], dim=2)


class GeneralizedAttention(nn.Module):
    """Multi-head spatial self-attention with the terms ``attention_type`` switches on.

    Args:
        in_channels: channels ``C`` of the input (and output) feature map.
        num_heads: attention heads; each has ``C // num_heads`` query / key / value channels.
        attention_type: four '0' / '1' switches for the terms listed in the module docstring
            ('1111' all, '0010' key content only: the cheapest, one map per image).
        kv_stride: subsampling of the keys and values (2 in MMDetection's configs).
        q_stride: subsampling of the queries (1: every position).
        position_embedding_dim: channels of the relative position embedding (both axes together,
            a multiple of 4); None for ``C``.
        position_magnitude: multiplier of the position offsets before embedding.

    Shapes: ``[N, C, H, W] -> [N, C, H, W]``.
    """

    def __init__(self, in_channels: int, *, num_heads: int, attention_type: str, kv_stride: int, q_stride: int,
                 position_embedding_dim: int | None, position_magnitude: int) -> None:
        super().__init__()
        if len(attention_type) != 4 or set(attention_type) - {"0", "1"} or "1" not in attention_type:
            raise ValueError(f"GeneralizedAttention: attention_type must be four '0' / '1' switches, not all 0, "
                             f"got {attention_type!r}")
        if not 1 <= num_heads <= in_channels:
            raise ValueError(f"GeneralizedAttention: {num_heads} heads for {in_channels} channels")
        self.appr_appr, self.appr_geom, self.bias_appr, self.bias_geom = (c == "1" for c in attention_type)
        self.attention_type = attention_type
        self.num_heads = num_heads
        self.kv_stride = kv_stride
        self.q_stride = q_stride
        self.position_embedding_dim = position_embedding_dim or in_channels
        self.position_magnitude = position_magnitude
        self.qk_embed_dim = in_channels // num_heads
        self.v_dim = in_channels // num_heads
        with_geometry = self.appr_geom or self.bias_geom
        if with_geometry and self.position_embedding_dim % 4:
            raise ValueError(f"GeneralizedAttention: position_embedding_dim must be a multiple of 4, got "
                             f"{self.position_embedding_dim}")
        inner = self.qk_embed_dim * num_heads

        def projection(cin: int, cout: int, bias: bool = False) -> nn.Conv2d:
            return nn.Conv2d(cin, cout, kernel_size=1, bias=bias)

        if self.appr_appr or self.appr_geom:
            self.query_conv = projection(in_channels, inner)
        if self.appr_appr or self.bias_appr:
            self.key_conv = projection(in_channels, inner)
        self.value_conv = projection(in_channels, self.v_dim * num_heads)
        if with_geometry:
            self.appr_geom_fc_x = nn.Linear(self.position_embedding_dim // 2, inner, bias=False)
            self.appr_geom_fc_y = nn.Linear(self.position_embedding_dim // 2, inner, bias=False)
        bound = 1.0 / math.sqrt(self.qk_embed_dim * 2)
        if self.bias_appr:
            self.appr_bias = nn.Parameter(torch.empty(inner).uniform_(-bound, bound))
        if self.bias_geom:
            self.geom_bias = nn.Parameter(torch.empty(inner).uniform_(-bound, bound))
        self.proj_conv = projection(self.v_dim * num_heads, in_channels, bias=True)
        self.gamma = nn.Parameter(torch.zeros(1))
        for m in self.modules():  # mmcv's kaiming_init(a=1, mode='fan_in', distribution='uniform')
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_uniform_(m.weight, a=1, mode="fan_in", nonlinearity="leaky_relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def query_dependent(self) -> bool:
        """Whether the attention map differs between queries (not so for key content alone)."""
        return self.appr_appr or self.appr_geom or self.bias_geom

    def _head_vectors(self, vector: torch.Tensor) -> torch.Tensor:
        """A learnt bias ``[heads * d]`` as a per-head query ``[1, heads, 1, d]``."""
        return vector.view(1, self.num_heads, 1, self.qk_embed_dim)

    def _position_energy(self, query: torch.Tensor, h: int, w: int, h_kv: int, w_kv: int,
                         device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """Relative-position terms ``[B, heads, h * w, h_kv, w_kv]`` for queries ``[B, heads, h, w, d]``
        (``B``, ``h``, ``w`` may be 1: a learnt bias, the same for every query position)."""
        heads, d, dim = self.num_heads, self.qk_embed_dim, self.position_embedding_dim
        embed = dict(q_stride=self.q_stride, kv_stride=self.kv_stride, magnitude=self.position_magnitude, dim=dim,
                     device=device, dtype=dtype)
        # [heads, w, d, w_kv] and [heads, h, d, h_kv], scaled by 1 / sqrt(2) as the two axes add up
        pos_x = self.appr_geom_fc_x(relative_position_embedding(w, w_kv, **embed)).view(w, w_kv, heads, d)
        pos_y = self.appr_geom_fc_y(relative_position_embedding(h, h_kv, **embed)).view(h, h_kv, heads, d)
        pos_x = pos_x.permute(2, 0, 3, 1) / math.sqrt(2)
        pos_y = pos_y.permute(2, 0, 3, 1) / math.sqrt(2)
        energy_x = torch.matmul(query.transpose(2, 3), pos_x).transpose(2, 3)  # [B, heads, h', w, w_kv]
        energy_y = torch.matmul(query, pos_y)  # [B, heads, h, w', h_kv]
        energy = energy_y.unsqueeze(-1) + energy_x.unsqueeze(-2)  # [B, heads, h, w, h_kv, w_kv]
        return energy.flatten(2, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        heads, d = self.num_heads, self.qk_embed_dim
        x_q = x[:, :, ::self.q_stride, ::self.q_stride] if self.q_stride > 1 else x
        x_kv = x[:, :, ::self.kv_stride, ::self.kv_stride] if self.kv_stride > 1 else x
        h, w = x_q.shape[2], x_q.shape[3]
        h_kv, w_kv = x_kv.shape[2], x_kv.shape[3]
        if self.appr_appr or self.appr_geom:
            query = self.query_conv(x_q).view(n, heads, d, h * w).transpose(2, 3)  # [N, heads, h * w, d]
        energy = 0
        if self.appr_appr or self.bias_appr:  # content of the keys, with the queries' or a learnt vector
            key = self.key_conv(x_kv).view(n, heads, d, h_kv * w_kv)
            if self.appr_appr:
                content = query + self._head_vectors(self.appr_bias) if self.bias_appr else query
            else:
                content = self._head_vectors(self.appr_bias)
            energy = torch.matmul(content, key).unflatten(3, (h_kv, w_kv))  # [N, heads, h * w or 1, h_kv, w_kv]
        if self.appr_geom or self.bias_geom:  # relative positions, with the queries' content or a learnt vector
            if self.appr_geom:
                geometry = query + self._head_vectors(self.geom_bias) if self.bias_geom else query
                geometry = geometry.unflatten(2, (h, w))
            else:
                geometry = self._head_vectors(self.geom_bias).unsqueeze(2)  # [1, heads, 1, 1, d]
            energy = energy + self._position_energy(geometry, h, w, h_kv, w_kv, x.device, x.dtype)
        attention = energy.flatten(3).softmax(dim=3)  # [N or 1, heads, h * w or 1, h_kv * w_kv]
        value = self.value_conv(x_kv).view(n, heads, self.v_dim, h_kv * w_kv)
        out = torch.matmul(attention, value.transpose(2, 3)).transpose(2, 3)  # [N, heads, v_dim, h * w or 1]
        if self.query_dependent:
            out = self.proj_conv(out.reshape(n, heads * self.v_dim, h, w))
            if self.q_stride > 1:
                out = F.interpolate(out, size=x.shape[2:], mode="bilinear", align_corners=False)
        else:  # one attended vector per image, the same at every position
            out = self.proj_conv(out.reshape(n, heads * self.v_dim, 1, 1))
        return self.gamma * out + x
