"""M2Det's MLFPN: TUM scale sizes, FFMv1 / FFMv2 / SFAM's concatenation rebuilt from the parts, SFAM's
attention on a hand-made case, and M2Det320's output shapes."""
from __future__ import annotations

import math

import pytest
import torch
from torch.nn import functional as F

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.models.necks.mlfpn import MLFPN, SFAM, TUM


def randomise_bn(module: torch.nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
            m.running_mean.data.uniform_(-0.2, 0.2)
            m.running_var.data.uniform_(0.5, 1.5)


@pytest.mark.parametrize(("size", "num_scales", "expected"), [
    (40, 6, [40, 20, 10, 5, 3, 1]),   # M2Det320
    (38, 6, [38, 19, 10, 5, 3, 1]),   # a 300x300 input
    (64, 6, [64, 32, 16, 8, 4, 2]),   # M2Det512
    (10, 4, [10, 5, 3, 1]),
])
def test_tum_scales(size, num_scales, expected):
    torch.manual_seed(0)
    tum = TUM(in_channels=6, channels=8, num_scales=num_scales, smooth=True).eval()
    with torch.no_grad():
        outs = tum(torch.randn(1, 6, size, size + 2 * (size > 10)))
    assert [o.shape[-2] for o in outs] == expected
    assert all(o.shape[:2] == (1, 8) for o in outs)
    assert len(tum.encoder) == len(tum.smooth) == num_scales - 1 and len(tum.laterals) == num_scales - 1


def test_tum_decoder_is_upsample_plus_lateral_then_smooth():
    """The largest output by hand from the TUM's parts: smooth(nearest-up(second decoded) + lateral(input))."""
    torch.manual_seed(0)
    tum = TUM(in_channels=4, channels=8, num_scales=3, smooth=True).eval()
    randomise_bn(tum)
    x = torch.randn(1, 4, 10, 10)
    with torch.no_grad():
        outs = tum(x)
        e1 = tum.encoder[0](x)               # 5x5
        e2 = tum.encoder[1](e1)              # 3x3, no padding: 5 -> 3
        d0 = tum.top(e2)
        d1 = F.interpolate(d0, size=(5, 5), mode="nearest") + tum.laterals[0](e1)
        d2 = F.interpolate(d1, size=(10, 10), mode="nearest") + tum.laterals[1](x)
        expected = [tum.smooth[1](d2), tum.smooth[0](d1), d0]
    for a, b in zip(outs, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_sfam_attention_by_hand():
    sfam = SFAM(channels=4, reduction=2)
    with torch.no_grad():
        sfam.fc1.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0]])[:, :, None, None])
        sfam.fc1.bias.zero_()
        sfam.fc2.weight.copy_(torch.tensor([[1.0, 0], [0, 1.0], [1.0, 1.0], [-1.0, 0]])[:, :, None, None])
        sfam.fc2.bias.copy_(torch.tensor([0.0, 0.0, 0.0, 1.0]))
    # channel means 1, -2, 3, 0.5: squeeze -> relu(1, -2) = (1, 0) -> excite (1, 0, 1, 0) -> sigmoid
    x = torch.tensor([1.0, -2.0, 3.0, 0.5])[None, :, None, None] + torch.tensor([[-1.0, 1.0], [2.0, -2.0]])
    s = 1 / (1 + math.exp(-1))
    expected_weights = torch.tensor([s, 0.5, s, 0.5])
    with torch.no_grad():
        torch.testing.assert_close(sfam.attention(x).flatten(), expected_weights)
        small = torch.full((1, 4, 1, 1), 2.0)   # another scale, the same excitation weights
        out_big, out_small = sfam([x, small])
    torch.testing.assert_close(out_big, x * expected_weights[None, :, None, None])
    s2 = 1 / (1 + math.exp(-2))
    # means 2, 2, 2, 2: squeeze (2, 2) -> excite (2, 2, 4, -2 + 1)
    torch.testing.assert_close(out_small.flatten(),
                               2.0 * torch.tensor([s2, s2, 1 / (1 + math.exp(-4)), 1 / (1 + math.exp(1))]))


def small_mlfpn(sfam: bool, num_levels: int = 3) -> MLFPN:
    torch.manual_seed(0)
    neck = MLFPN(in_channels=(8, 16), base_channels=(6, 10), tum_channels=8, num_levels=num_levels, num_scales=6,
                 smooth=True, sfam=sfam, sfam_reduction=4).eval()
    randomise_bn(neck)
    return neck


def feats(batch: int = 2, size: int = 40) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randn(batch, 8, size, size, generator=g), torch.randn(batch, 16, size // 2, size // 2, generator=g)]


def test_ffmv1_ffmv2_and_scale_concatenation_from_the_parts():
    neck = small_mlfpn(sfam=False)
    shallow, deep = feats()
    with torch.no_grad():
        outs = neck([shallow, deep])
        base = neck.base_feature(shallow, deep)
        up = neck.reduce_deep(deep).repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest x2
        torch.testing.assert_close(base, torch.cat([neck.reduce_shallow(shallow), up], 1), rtol=0, atol=0)
        compressed = neck.compress(base)
        assert compressed.shape == (2, 4, 40, 40)   # tum_channels / 2
        tum_outs = [neck.tums[0](compressed)]
        for tum in neck.tums[1:]:   # FFMv2: the base feature with the previous TUM's largest output
            tum_outs.append(tum(torch.cat([compressed, tum_outs[-1][0]], 1)))
    assert [t.laterals[-1].conv.in_channels for t in neck.tums] == [4, 12, 12]
    for s, out in enumerate(outs):
        expected = torch.cat([t[s] for t in tum_outs], 1)   # the first TUM's channels first
        if s == 0:
            expected = neck.first_level_norm(expected)
        torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_sfam_reweights_the_concatenated_scales():
    with_sfam, without = small_mlfpn(sfam=True), small_mlfpn(sfam=False)
    without.load_state_dict({k: v for k, v in with_sfam.state_dict().items() if not k.startswith("sfam.")})
    without.first_level_norm = torch.nn.Identity()  # the plain concatenation on every scale
    x = feats()
    with torch.no_grad():
        attended = with_sfam.sfam(without(x))
        attended[0] = with_sfam.first_level_norm(attended[0])
        outs = with_sfam(x)
    for a, b in zip(outs, attended):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_m2det320_shapes():
    cfg = S.MLFPNConfig()
    with torch.device("meta"):
        neck = build_neck(cfg, (512, 1024)).eval()
        outs = neck([torch.empty(1, 512, 40, 40), torch.empty(1, 1024, 20, 20)])
    assert neck.out_channels == (2048,) * 6
    assert [tuple(o.shape) for o in outs] == [(1, 2048, s, s) for s in (40, 20, 10, 5, 3, 1)]
    assert len(neck.tums) == 8 and neck.sfam is not None


def test_training_batch_of_two_and_the_config_checks():
    neck = small_mlfpn(sfam=True).train()
    outs = neck(feats(batch=2))
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())
    with pytest.raises(ConfigError, match="two backbone levels"):
        build_neck(S.MLFPNConfig(), (256, 512, 1024))
    with pytest.raises(S.Invalid, match="at least 3 scales"):
        S.MLFPNConfig(num_scales=2)


def test_group_norm_keeps_each_image_to_itself_in_training():
    """``norm: gn``: GroupNorm in every conv (the last BatchNorm of the largest scale aside), so in
    training an image's outputs at the smallest scales do not move with the other images of its batch."""
    cfg = S.MLFPNConfig(base_channels=(8, 8), tum_channels=16, num_levels=2, norm="gn", gn_groups=4)
    neck = build_neck(cfg, (8, 16)).train()
    norms = [type(m) for name, m in neck.named_modules() if name.endswith(".bn")]
    assert norms and set(norms) == {torch.nn.GroupNorm}
    x = feats(batch=3)
    two, three = neck([f[:2] for f in x]), neck(x)
    for a, t in zip(two[1:], three[1:]):
        torch.testing.assert_close(a, t[:2])
    bn = build_neck(S.MLFPNConfig(base_channels=(8, 8), tum_channels=16, num_levels=2), (8, 16)).train()
    assert not torch.allclose(bn([f[:2] for f in x])[-1], bn(x)[-1][:2])  # BatchNorm: they do
    with pytest.raises(S.Invalid, match="gn_groups"):
        S.MLFPNConfig(base_channels=(8, 8), tum_channels=16, norm="gn", gn_groups=16)
