"""Balanced feature pyramid: the exportable adaptive max pool, MMDetection's BFP on the same weights,
the builder, and an ONNX export with symbolic sizes that equals eager at other sizes."""
from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
from torch.nn import functional as F

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.models.necks.bfp import BFP, adaptive_max_pool
from dettool.trainer.models.necks.sequence import NeckSequence

CHANNELS = 8
# a 200 x 336 padded input's P3-P7 (stride 8-128): P6 and P7 of odd-sized P5 are not
# integer fractions of P4, so pooling P4 to them takes windows of unequal stride
SIZES = [(25, 42), (13, 21), (7, 11), (4, 6), (2, 3)]


def pyramid(batch: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, CHANNELS, h, w, generator=g) for h, w in SIZES]


@pytest.mark.parametrize("in_size, out_size", [((8, 12), (4, 6)), ((26, 42), (7, 11)), ((26, 42), (4, 6)),
                                               ((13, 21), (2, 3)), ((10, 14), (3, 4)), ((5, 7), (5, 7)),
                                               ((3, 2), (5, 7)), ((9, 9), (1, 1))])
def test_adaptive_max_pool_equals_torch(in_size, out_size):
    x = torch.randn(2, 3, *in_size, generator=torch.Generator().manual_seed(1))
    assert torch.equal(adaptive_max_pool(x, out_size), F.adaptive_max_pool2d(x, out_size))


def test_adaptive_max_pool_gradient_reaches_each_windows_maximum():
    x = torch.randn(1, 2, 13, 21, generator=torch.Generator().manual_seed(2), requires_grad=True)
    ref = x.detach().clone().requires_grad_(True)
    adaptive_max_pool(x, (4, 6)).sum().backward()
    F.adaptive_max_pool2d(ref, (4, 6)).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)


def randomise(module: torch.nn.Module, seed: int = 3) -> None:
    """Every parameter random (the non-local block's output conv starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)


def mmdet_weights(ours: dict[str, torch.Tensor], refine_type: str | None) -> dict[str, torch.Tensor]:
    """dettool's BFP state dict under MMDetection's names (its convs are ``ConvModule.conv``)."""
    out = {}
    for name, value in ours.items():
        if refine_type == "non_local":
            name = name.replace("refine.g.", "refine.g.conv.").replace("refine.theta.", "refine.theta.conv.")
            name = name.replace("refine.phi.", "refine.phi.conv.").replace("refine.conv_out.", "refine.conv_out.conv.")
        elif refine_type == "conv":
            name = name.replace("refine.0.", "refine.conv.")
        out[name] = value
    return out


@pytest.mark.parametrize("refine_type", ["non_local", "conv", None])
@pytest.mark.parametrize("refine_level", [1, 2])
def test_bfp_equals_mmdetection(refine_type, refine_level):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.necks import BFP as MMDetBFP

    ours = BFP(in_channels=CHANNELS, num_levels=len(SIZES), refine_level=refine_level, refine_type=refine_type)
    randomise(ours)
    ref = MMDetBFP(in_channels=CHANNELS, num_levels=len(SIZES), refine_level=refine_level, refine_type=refine_type)
    ref.load_state_dict(mmdet_weights(ours.state_dict(), refine_type))
    feats = pyramid()
    with torch.no_grad():
        got, expected = ours(feats), ref(tuple(feats))
    assert [tuple(f.shape) for f in got] == [tuple(f.shape) for f in feats]
    for level, (d, r) in enumerate(zip(got, expected)):
        torch.testing.assert_close(d, r, atol=1e-5, rtol=1e-5, msg=lambda m, level=level: f"level {level}: {m}")


def test_non_local_starts_as_identity_and_learns():
    bfp = BFP(in_channels=CHANNELS, num_levels=len(SIZES), refine_level=1, refine_type="non_local")
    plain = BFP(in_channels=CHANNELS, num_levels=len(SIZES), refine_level=1, refine_type=None)
    feats = pyramid(seed=4)
    for d, r in zip(bfp(feats), plain(feats)):
        torch.testing.assert_close(d, r)
    sum(f.square().sum() for f in bfp(feats)).backward()
    assert bfp.refine.conv_out.weight.grad.abs().sum() > 0


def test_batch_of_two_equals_two_batches_of_one():
    bfp = BFP(in_channels=CHANNELS, num_levels=len(SIZES), refine_level=1, refine_type="non_local")
    randomise(bfp)
    feats = pyramid()
    with torch.no_grad():
        batched = bfp(feats)
        singles = [bfp([f[i:i + 1] for f in feats]) for i in range(2)]
    for level, out in enumerate(batched):
        torch.testing.assert_close(out, torch.cat([s[level] for s in singles]), atol=1e-5, rtol=1e-5)


def test_builder_makes_a_sequence_after_the_fpn():
    neck = build_neck((S.FPNConfig(out_channels=CHANNELS, num_outs=5),
                       S.BFPConfig(refine_level=1, refine_type="non_local")), (16, 32, 64))
    assert isinstance(neck, NeckSequence) and isinstance(neck.necks[1], BFP)
    assert neck.out_channels == (CHANNELS,) * 5
    assert neck.necks[1].refine_level == 1 and neck.necks[1].num_levels == 5


def test_builder_refuses_a_refine_level_past_the_levels():
    with pytest.raises(ConfigError, match="refine_level 4"):
        build_neck((S.FPNConfig(out_channels=CHANNELS, num_outs=4), S.BFPConfig(refine_level=4)), (16, 32, 64))


def test_onnx_export_with_symbolic_sizes_equals_eager_at_other_sizes(tmp_path):
    """Traced at one size, run at sizes whose extra levels are odd (unequal pooling windows)."""
    ort = pytest.importorskip("onnxruntime")

    class FourLevels(torch.nn.Module):  # P3-P6 of an image of 32 h x 32 w, as the synth model's
        def __init__(self) -> None:
            super().__init__()
            self.bfp = BFP(in_channels=CHANNELS, num_levels=4, refine_level=1, refine_type="non_local")

        def forward(self, p3: torch.Tensor) -> tuple[torch.Tensor, ...]:
            feats = [p3]
            for _ in range(3):
                feats.append(F.max_pool2d(feats[-1], 3, stride=2, padding=1))  # ceil(x / 2), as strided convs
            return tuple(self.bfp(feats))

    model = FourLevels().eval()
    randomise(model)
    h, w = torch.export.Dim("h", min=1, max=64), torch.export.Dim("w", min=1, max=64)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(2, CHANNELS, 16, 20),), dynamo=True, opset_version=19,
                                    dynamic_shapes=({2: 4 * h, 3: 4 * w},))
    path = tmp_path / "bfp.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((100, 168), (28, 44), (12, 20)):  # P6 of 13 x 21, 4 x 6 (P5 odd), 2 x 3
        x = torch.randn(2, CHANNELS, *size, generator=torch.Generator().manual_seed(5))
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        for d, r in zip(got, expected):
            torch.testing.assert_close(torch.from_numpy(d), r, atol=1e-5, rtol=1e-5)
