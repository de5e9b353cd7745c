"""HRFPN: level shapes and channels on W18 / W32 branches, equality with MMDetection's HRFPN on the
same weights (average and max pooling, stride-2 output convs), the builder and converter, and an
ONNX export of HRNet + HRFPN with a symbolic input size that equals eager at other sizes."""
from __future__ import annotations

import contextlib
import io
import warnings

import pytest
import torch
from torch.nn import functional as F

from dettool.config import schema as S
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.models.backbones.hrnet import HRNet, HRStage
from dettool.trainer.models.necks.hrfpn import HRFPN

W18, W32 = (18, 36, 72, 144), (32, 64, 128, 256)


def branches(channels: tuple[int, ...], h: int, w: int, seed: int = 0) -> list[torch.Tensor]:
    """HRNet's outputs for an ``h`` x ``w`` input: strides 4, 8, 16, 32."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, c, h // s, w // s, generator=g) for c, s in zip(channels, (4, 8, 16, 32))]


@pytest.mark.parametrize("channels", [W18, W32])
@pytest.mark.parametrize("h, w", [(256, 320), (128, 96)])
def test_five_levels_at_strides_4_to_64(channels, h, w):
    neck = build_neck(S.HRFPNConfig(), channels)
    assert isinstance(neck, HRFPN) and neck.out_channels == (256,) * 5
    assert neck.reduction_conv.conv.in_channels == sum(channels)
    with torch.device("meta"):
        outs = neck.to("meta")([f.to("meta") for f in branches(channels, h, w)])
    assert [tuple(o.shape) for o in outs] == [(1, 256, h // s, w // s) for s in (4, 8, 16, 32, 64)]


def test_levels_are_poolings_of_the_reduced_concatenation():
    """With identity output convs: level 0 is the 1x1 reduction of the branches upsampled to the
    first one's size, level l its 2**l average pooling."""
    neck = HRFPN((2, 3), out_channels=2, num_outs=3, pooling_type="avg", stride=1)
    with torch.no_grad():
        for conv in neck.fpn_convs:
            conv.conv.weight.zero_()
            conv.conv.weight[:, :, 1, 1] = torch.eye(2)
        feats = [torch.randn(1, 2, 8, 8), torch.randn(1, 3, 4, 4)]
        outs = neck(feats)
        up = F.interpolate(feats[1], scale_factor=2, mode="bilinear", align_corners=False)
        reduced = neck.reduction_conv.conv(torch.cat([feats[0], up], dim=1))
    torch.testing.assert_close(outs[0], reduced)
    torch.testing.assert_close(outs[1], F.avg_pool2d(reduced, 2))
    torch.testing.assert_close(outs[2], reduced.reshape(1, 2, 2, 4, 2, 4).mean(dim=(3, 5)))


@pytest.mark.parametrize("pooling_type, stride", [("avg", 1), ("max", 1), ("avg", 2)])
def test_equals_mmdetection_on_the_same_weights(pooling_type, stride):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.necks import HRFPN as MMDetHRFPN

    ref = MMDetHRFPN(list(W18), 32, num_outs=5, pooling_type=pooling_type.upper(), stride=stride)
    ours = HRFPN(W18, out_channels=32, num_outs=5, pooling_type=pooling_type, stride=stride)
    g = torch.Generator().manual_seed(2)
    ref.load_state_dict({k: torch.randn(v.shape, generator=g) * 0.1 for k, v in ref.state_dict().items()})
    ours.load_state_dict(ref.state_dict())  # strict: MMDetection's names
    feats = branches(W18, 128, 192, seed=3)
    with torch.no_grad():
        expected, got = ref(feats), ours(feats)
    assert len(got) == len(expected) == 5
    for level, (d, r) in enumerate(zip(got, expected)):
        torch.testing.assert_close(d, r, atol=1e-5, rtol=1e-5, msg=lambda m, level=level: f"level {level}: {m}")


def test_converter_translates_mmdetections_hrfpn_and_refuses_what_it_lacks():
    from dettool.errors import ConfigError
    from dettool.interop.mmdet_features import NECKS
    from dettool.interop.mmdet_section import Section, Translation

    t = Translation("x.py", config={"model": {}})
    levels = NECKS["HRFPN"](t, Section(t, {"type": "HRFPN", "in_channels": list(W32), "out_channels": 256,
                                           "stride": 2, "pooling_type": "MAX"}, "model.neck"), (0, 1, 2, 3))
    assert levels == 5
    assert t.config["model"]["neck"] == {"type": "hrfpn", "out_channels": 256, "num_outs": 5, "pooling_type": "max",
                                         "stride": 2}
    with pytest.raises(ConfigError, match="model.neck.with_cp"):
        NECKS["HRFPN"](t, Section(t, {"type": "HRFPN", "in_channels": list(W32), "out_channels": 256,
                                      "with_cp": True}, "model.neck"), (0, 1, 2, 3))


class HRNetWithHRFPN(torch.nn.Module):
    """A narrow HRNet and its HRFPN, as a detector's features."""

    def __init__(self) -> None:
        super().__init__()
        stages = (HRStage(num_modules=1, block="bottleneck", num_blocks=(1,), num_channels=(8,)),
                  HRStage(num_modules=1, block="basic", num_blocks=(1, 1), num_channels=(4, 8)),
                  HRStage(num_modules=1, block="basic", num_blocks=(1, 1, 1), num_channels=(4, 8, 16)),
                  HRStage(num_modules=1, block="basic", num_blocks=(1,) * 4, num_channels=(4, 8, 16, 32)))
        self.backbone = HRNet(stages=stages, norm="bn", gn_groups=32, norm_eval=True)
        self.neck = HRFPN(self.backbone.out_channels, out_channels=8, num_outs=5, pooling_type="avg", stride=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(self.neck(self.backbone(x)))


@pytest.mark.slow  # tracing the HRNet's few hundred modules takes about half a minute of CPU
def test_onnx_export_with_a_symbolic_input_size_equals_eager_at_other_sizes(tmp_path):
    """Traced at one padded size (a multiple of 32), run at others: the fusion's and HRFPN's
    upsampling follow the branches' sizes, not the traced ones."""
    ort = pytest.importorskip("onnxruntime")
    model = HRNetWithHRFPN().eval()
    g = torch.Generator().manual_seed(6)
    with torch.no_grad():
        for name, value in model.state_dict().items():
            if value.dtype.is_floating_point:
                value.copy_(torch.rand(value.shape, generator=g) + 0.5 if name.endswith("running_var")
                            else torch.randn(value.shape, generator=g) * 0.3)
    h, w = torch.export.Dim("h", min=2, max=64), torch.export.Dim("w", min=2, max=64)
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (torch.randn(2, 3, 128, 96),), dynamo=True, opset_version=19,
                                    dynamic_shapes=({2: 32 * h, 3: 32 * w},))
    path = tmp_path / "hrnet_hrfpn.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((64, 64), (160, 224), (96, 128)):
        x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(7))
        with torch.no_grad():
            expected = model(x)
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
        assert [tuple(d.shape) for d in got] == [tuple(r.shape) for r in expected]
        for d, r in zip(got, expected):
            torch.testing.assert_close(torch.from_numpy(d), r, atol=1e-4, rtol=1e-4)
