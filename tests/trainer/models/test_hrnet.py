"""HRNet (HRNetV2p): output shapes and channels of W18 / W32 from the zoo configs, the multi-scale
fusion of a high-resolution module on a tiny case worked by hand, equality with MMDetection's HRNet
on the same weights (BN, GroupNorm, a bottleneck stage, two new branches at once), norm_eval,
weights files and the config's checks."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest
import torch
from detector_helpers import CONFIGS
from torch import nn
from torchvision.models.resnet import BasicBlock

from dettool.config import load_config
from dettool.config import schema as S
from dettool.errors import CheckpointError, ConfigError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.models.backbones.hrnet import HRModule, HRNet, HRStage

# MMDetection's ``extra`` of a small HRNet, and the same as dettool's stages
TINY_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(8,)),
    stage2=dict(num_modules=1, num_branches=2, block="BASIC", num_blocks=(1, 1), num_channels=(4, 8)),
    stage3=dict(num_modules=2, num_branches=3, block="BASIC", num_blocks=(1, 1, 2), num_channels=(4, 8, 16)),
    stage4=dict(num_modules=1, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1), num_channels=(4, 8, 16, 32)))
# stage 2 of bottlenecks; stage 3 grows two branches at once (a chain of two stride-2 convs)
ODD_EXTRA = dict(
    stage1=dict(num_modules=1, num_branches=1, block="BASIC", num_blocks=(1,), num_channels=(64,)),
    stage2=dict(num_modules=1, num_branches=1, block="BOTTLENECK", num_blocks=(1,), num_channels=(4,)),
    stage3=dict(num_modules=1, num_branches=3, block="BASIC", num_blocks=(1, 1, 1), num_channels=(8, 8, 16)),
    stage4=dict(num_modules=1, num_branches=4, block="BASIC", num_blocks=(1, 1, 1, 1), num_channels=(8, 8, 16, 16)))


def stages_of(extra: dict) -> tuple[HRStage, ...]:
    return tuple(HRStage(num_modules=s["num_modules"], block=s["block"].lower(), num_blocks=s["num_blocks"],
                         num_channels=s["num_channels"]) for s in extra.values())


def shapes_on_meta(backbone: nn.Module, h: int, w: int) -> list[tuple[int, ...]]:
    with torch.device("meta"):
        return [tuple(f.shape) for f in backbone.to("meta")(torch.empty(2, 3, h, w))]


@pytest.mark.parametrize("config, channels", [("faster_rcnn_hrnetv2p_w18_1x_coco", (18, 36, 72, 144)),
                                              ("faster_rcnn_hrnetv2p_w32_1x_coco", (32, 64, 128, 256))])
@pytest.mark.parametrize("h, w", [(800, 1216), (256, 320)])
def test_zoo_widths_give_four_branches_at_strides_4_to_32(config, channels, h, w):
    with torch.device("meta"):
        backbone = build_backbone(load_config(CONFIGS / f"{config}.yaml").model.backbone)
    assert isinstance(backbone, HRNet) and backbone.out_channels == channels
    assert shapes_on_meta(backbone, h, w) == [(2, c, h // s, w // s) for c, s in zip(channels, (4, 8, 16, 32))]
    assert [len(stage) for stage in backbone.stages] == [1, 4, 3]  # modules per stage
    assert len(backbone.layer1) == 4 and backbone.layer1[0].conv3.out_channels == 256


def test_fusion_of_two_branches_by_hand():
    """Blocks reduced to the identity (no norm, zero second convs, non-negative inputs): output 0
    is ``x0 + up(0.5 x1)`` (1x1 conv, nearest upsampling), output 1 is ``2 x0[::2, ::2] + x1``
    (a 3x3 stride-2 conv whose centre tap is 2)."""
    module = HRModule(block=BasicBlock, num_blocks=(1, 1), in_channels=(1, 1), num_channels=(1, 1),
                      norm=lambda channels: nn.Identity())
    with torch.no_grad():
        for branch in module.branches:
            branch[0].conv1.weight.fill_(1.0)
            branch[0].conv2.weight.zero_()
        module.fuse_layers[0][1][0].weight.fill_(0.5)
        down = module.fuse_layers[1][0][0][0]
        down.weight.zero_()
        down.weight[0, 0, 1, 1] = 2.0
        x0 = torch.arange(16.0).reshape(1, 1, 4, 4)
        x1 = torch.tensor([[[[10.0, 20.0], [30.0, 40.0]]]])
        out0, out1 = module([x0, x1])
    assert torch.equal(out0, torch.tensor([[[[5.0, 6.0, 12.0, 13.0], [9.0, 10.0, 16.0, 17.0],
                                             [23.0, 24.0, 30.0, 31.0], [27.0, 28.0, 34.0, 35.0]]]]))
    assert torch.equal(out1, torch.tensor([[[[10.0, 24.0], [46.0, 60.0]]]]))
    assert isinstance(module.fuse_layers[0][0], nn.Identity) and isinstance(module.fuse_layers[1][1], nn.Identity)


def test_fusion_downsamples_by_a_chain_with_relus_between():
    module = HRModule(block=BasicBlock, num_blocks=(1, 1, 1), in_channels=(4, 8, 16), num_channels=(4, 8, 16),
                      norm=nn.BatchNorm2d)
    chain = module.fuse_layers[2][0]  # branch 0 -> branch 2: 4 -> 4 (ReLU), then 4 -> 16 without
    assert [(s[0].in_channels, s[0].out_channels, s[0].stride) for s in chain] == [(4, 4, (2, 2)), (4, 16, (2, 2))]
    assert isinstance(chain[0][-1], nn.ReLU) and not isinstance(chain[1][-1], nn.ReLU)
    up = module.fuse_layers[0][2]
    assert up[0].kernel_size == (1, 1) and (up[0].in_channels, up[0].out_channels) == (16, 4)


def mmdet_hrnet(extra: dict, norm_cfg: dict | None = None):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmdet.models.backbones import HRNet as MMDetHRNet

    return MMDetHRNet(extra, norm_cfg=norm_cfg or dict(type="BN"))


def randomise(state: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Random weights and BN statistics (positive variances) under the same names."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for name, value in state.items():
        if not value.dtype.is_floating_point:
            out[name] = value
        elif name.endswith("running_var"):
            out[name] = torch.rand(value.shape, generator=g) + 0.5
        else:
            out[name] = torch.randn(value.shape, generator=g) * 0.3
    return out


@pytest.mark.parametrize("extra, norm, size", [(TINY_EXTRA, "bn", (96, 64)), (ODD_EXTRA, "bn", (64, 96)),
                                               (TINY_EXTRA, "gn", (64, 64))])
def test_equals_mmdetection_on_the_same_weights(extra, norm, size):
    ref = mmdet_hrnet(extra, dict(type="GN", num_groups=4) if norm == "gn" else None)
    ref.eval()  # MMDetection's train() returns None
    ours = HRNet(stages=stages_of(extra), norm=norm, gn_groups=4, norm_eval=True).eval()
    state = randomise(ref.state_dict())
    ref.load_state_dict(state)
    if norm == "gn":  # MMDetection names the stem's and blocks' GroupNorms gn1 / gn2 (BN: bn1 / bn2)
        state = {re.sub(r"(^|\.)gn(\d)\.", r"\1bn\2.", k): v for k, v in state.items()}
    ours.load_state_dict(state)  # strict: the same names
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected, got = ref(x), ours(x)
    assert len(got) == 4
    for i, (d, r) in enumerate(zip(got, expected)):
        torch.testing.assert_close(d, r, atol=1e-5, rtol=1e-5, msg=lambda m, i=i: f"branch {i}: {m}")


def test_w18_has_mmdetections_parameter_names_and_shapes():
    """dettool's W18 (from its zoo config) against MMDetection's, built from its shipped config."""
    from dettool.interop.mmdet_config import read_mmdet_config

    configs = Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs"
    config = configs / "hrnet" / "faster-rcnn_hrnetv2p-w18-1x_coco.py"
    with torch.device("meta"):
        ref = mmdet_hrnet(read_mmdet_config(config)["model"]["backbone"]["extra"])
        ours = build_backbone(load_config(CONFIGS / "faster_rcnn_hrnetv2p_w18_1x_coco.yaml").model.backbone)
    expected = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == expected
    assert len(expected) > 1000


def test_norm_eval_keeps_batch_statistics_frozen_in_training():
    backbone = HRNet(stages=stages_of(TINY_EXTRA), norm="bn", gn_groups=32, norm_eval=True).train()
    norms = [m for m in backbone.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)
    assert all(p.requires_grad for p in backbone.parameters())  # trained BN affine, as MMDetection's
    trained = HRNet(stages=stages_of(TINY_EXTRA), norm="bn", gn_groups=32, norm_eval=False).train()
    assert all(m.training for m in trained.modules())


def test_weights_from_a_detector_checkpoint_or_an_imagenet_state_dict(tmp_path):
    source = HRNet(stages=stages_of(TINY_EXTRA), norm="bn", gn_groups=32, norm_eval=True)
    state = randomise(source.state_dict(), seed=4)
    torch.save({"model": {**{f"backbone.{k}": v for k, v in state.items()}, "neck.x": torch.zeros(1)}},
               tmp_path / "detector.pth")
    imagenet = {**state, "incre_modules.0.0.conv1.weight": torch.zeros(1), "classifier.weight": torch.zeros(2, 2)}
    torch.save(imagenet, tmp_path / "imagenet.pth")
    for name in ("detector.pth", "imagenet.pth"):
        loaded = HRNet(stages=stages_of(TINY_EXTRA), norm="bn", gn_groups=32, norm_eval=True,
                       weights=str(tmp_path / name))
        assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    wider = stages_of(TINY_EXTRA)[:3] + (HRStage(num_modules=1, block="basic", num_blocks=(1,) * 4,
                                                 num_channels=(4, 8, 16, 64)),)
    with pytest.raises(CheckpointError, match="shape mismatch"):
        HRNet(stages=wider, norm="bn", gn_groups=32, norm_eval=True, weights=str(tmp_path / "detector.pth"))


@pytest.mark.parametrize("override, key", [
    ("model.backbone.stage2.num_blocks=[4]", "model.backbone.stage2.num_blocks"),
    ("model.backbone.stage3.num_channels=[18, 36]", "model.backbone.stage3.num_channels"),
    ("model.backbone.stage1.num_modules=2", "model.backbone.stage1"),
    ("model.backbone.stage4={num_branches: 2, num_blocks: [4, 4], num_channels: [18, 36]}",
     "model.backbone.stage4.num_branches"),
    ("model.backbone.stage2.block=bottlenek", "model.backbone.stage2.block")])
def test_config_refuses_inconsistent_stages_naming_the_key(override, key):
    with pytest.raises(ConfigError, match=re.escape(key)):
        load_config(CONFIGS / "faster_rcnn_hrnetv2p_w18_1x_coco.yaml", [override])


def test_builder_takes_the_configs_norm():
    stages = {f"stage{k}": S.HRNetStageConfig(num_modules=s["num_modules"], num_branches=s["num_branches"],
                                               block=s["block"].lower(), num_blocks=s["num_blocks"],
                                               num_channels=s["num_channels"])
              for k, s in enumerate(TINY_EXTRA.values(), start=1)}
    backbone = build_backbone(S.HRNetConfig(**stages, norm="gn", gn_groups=2))
    assert isinstance(backbone.bn1, nn.GroupNorm) and backbone.bn1.num_groups == 2
    assert all(not isinstance(m, nn.BatchNorm2d) for m in backbone.modules())
    assert backbone.out_channels == (4, 8, 16, 32)
