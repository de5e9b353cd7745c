"""SSD's VGG backbone and neck: output shapes for SSD300 and SSD512, and equality with MMDetection's
``SSDVGG`` + ``SSDNeck`` on the same weights."""
from __future__ import annotations

import pytest
import torch

from dettool.config import schema as C
from dettool.errors import CheckpointError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.builder.necks import build_neck

# MMDetection's configs/_base_/models/ssd300.py and configs/ssd/ssd512_coco.py
SSD300_NECK = {"out_channels": (512, 1024, 512, 256, 256, 256), "level_strides": (2, 2, 1, 1),
               "level_paddings": (1, 1, 0, 0), "l2_norm_scale": 20.0, "last_kernel_size": 3}
SSD512_NECK = {"out_channels": (512, 1024, 512, 256, 256, 256, 256), "level_strides": (2, 2, 2, 2, 1),
               "level_paddings": (1, 1, 1, 1, 1), "l2_norm_scale": 20.0, "last_kernel_size": 4}


def ssd(neck: C.SSDNeckConfig) -> tuple[torch.nn.Module, torch.nn.Module]:
    backbone = build_backbone(C.SSDVGGConfig())
    return backbone, build_neck(neck, backbone.out_channels)


def shapes_on_meta(size: int, neck: C.SSDNeckConfig) -> list[tuple[int, ...]]:
    """Output shapes of backbone + neck for a ``size`` x ``size`` image, computed without the
    arithmetic (meta tensors), which keeps the test fast."""
    with torch.device("meta"):
        backbone, neck_module = ssd(neck)
        return [tuple(f.shape) for f in neck_module(backbone(torch.empty(1, 3, size, size)))]


def test_ssd300_shapes():
    backbone = build_backbone(C.SSDVGGConfig())
    assert backbone.out_channels == (512, 1024)
    sizes = (38, 19, 10, 5, 3, 1)
    assert shapes_on_meta(300, C.SSDNeckConfig()) == [
        (1, c, s, s) for c, s in zip(SSD300_NECK["out_channels"], sizes)]


def test_ssd512_shapes():
    sizes = (64, 32, 16, 8, 4, 2, 1)
    assert shapes_on_meta(512, C.SSDNeckConfig(**SSD512_NECK)) == [
        (1, c, s, s) for c, s in zip(SSD512_NECK["out_channels"], sizes)]


def test_an_output_before_a_relu_is_not_overwritten_by_it():
    """MMDetection's in-place ReLUs would rectify a pre-ReLU output after it is taken; dettool's do not."""
    torch.manual_seed(0)
    backbone = build_backbone(C.SSDVGGConfig(out_feature_indices=(21, 34)))
    assert backbone.out_channels == (512, 1024)
    with torch.no_grad():
        conv4_3 = backbone(torch.randn(1, 3, 32, 32))[0]
    assert conv4_3.min() < 0


def test_defaults_are_ssd300s():
    assert C.SSDNeckConfig() == C.SSDNeckConfig(**SSD300_NECK)


def test_l2_norm_starts_at_its_scale_and_normalises_channels():
    _, neck = ssd(C.SSDNeckConfig())
    assert torch.equal(neck.l2_norm.weight.detach(), torch.full((512,), 20.0))
    x = torch.randn(2, 512, 3, 3, generator=torch.Generator().manual_seed(0))
    y = neck.l2_norm(x)
    torch.testing.assert_close(y.norm(dim=1), torch.full((2, 3, 3), 20.0))


def test_neck_without_l2_norm_passes_the_first_level_through():
    _, neck = ssd(C.SSDNeckConfig(l2_norm_scale=None))
    x = [torch.randn(1, 512, 5, 5), torch.randn(1, 1024, 3, 3)]
    neck.extra_layers = neck.extra_layers[:1]  # 3x3 -> 2x2 is all this small input allows
    assert torch.equal(neck(x)[0], x[0])


def test_bad_neck_settings_are_refused():
    with pytest.raises(C.Invalid, match="level_paddings"):
        C.SSDNeckConfig(level_paddings=(1, 1, 0))
    with pytest.raises(ValueError, match="must start with in_channels"):
        build_neck(C.SSDNeckConfig(), (256, 1024))


def test_backbone_weights_load_from_a_detector_checkpoint(tmp_path):
    torch.manual_seed(0)
    source = build_backbone(C.SSDVGGConfig())
    state = {f"backbone.{k}": v for k, v in source.state_dict().items()}
    torch.save({"state_dict": {**state, "neck.l2_norm.weight": torch.ones(512)}}, tmp_path / "ssd.pth")
    loaded = build_backbone(C.SSDVGGConfig(weights=str(tmp_path / "ssd.pth")))
    assert all(torch.equal(a, b) for a, b in zip(source.state_dict().values(), loaded.state_dict().values()))
    del state["backbone.features.33.bias"]
    torch.save(state, tmp_path / "partial.pth")
    with pytest.raises(CheckpointError, match=r"lack 1 tensors, e\.g\. features\.33\.bias"):
        build_backbone(C.SSDVGGConfig(weights=str(tmp_path / "partial.pth")))


def randomise(module: torch.nn.Module) -> None:
    """Every weight random, biases and L2 scales too, so that a swapped channel or layer shows."""
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn_like(p) * (2.0 / p[0].numel()) ** 0.5 if p.dim() > 1 else torch.rand_like(p))


@pytest.fixture(scope="module")
def vgg_and_reference():
    """dettool's SSDVGG with random weights, MMDetection's with the same weights (loaded by name,
    strictly: the state-dict keys are MMDetection's), and both one's outputs on one image."""
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.backbones import SSDVGG

    torch.manual_seed(0)
    backbone = build_backbone(C.SSDVGGConfig())
    randomise(backbone)
    reference = SSDVGG(depth=16, with_last_pool=False, ceil_mode=True, out_indices=(3, 4),
                       out_feature_indices=(22, 34))
    reference.load_state_dict(backbone.state_dict(), strict=True)
    image = torch.randn(1, 3, 300, 300, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        return backbone(image), list(reference(image))


def test_backbone_equals_mmdetection(vgg_and_reference):
    ours, ref = vgg_and_reference
    assert [tuple(f.shape) for f in ours] == [(1, 512, 38, 38), (1, 1024, 19, 19)]
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("neck", [SSD300_NECK, SSD512_NECK], ids=["ssd300", "ssd512"])
def test_neck_equals_mmdetection(vgg_and_reference, neck):
    """SSD512's neck also runs on the 300x300 image's features (down to 1x1), which keeps this fast."""
    from mmdet.models.necks import SSDNeck

    ours, ref = vgg_and_reference
    torch.manual_seed(0)
    neck_module = build_neck(C.SSDNeckConfig(**neck), (512, 1024))
    randomise(neck_module)
    reference = SSDNeck(in_channels=(512, 1024), **neck)
    reference.load_state_dict(neck_module.state_dict(), strict=True)
    with torch.no_grad():
        ours, ref = neck_module(ours), reference(ref)
    assert len(ours) == len(ref) == len(neck["out_channels"])
    for a, b in zip(ours, ref):
        assert a.shape == b.shape
        torch.testing.assert_close(a, b, rtol=0, atol=0)
