"""GCNet's global context block: attention pooling by hand, mmcv's ContextBlock on the same weights,
the block as a ResNet stage plugin, and its config's checks."""
from __future__ import annotations

import math
import re

import pytest
import torch
from detector_helpers import CONFIGS

from dettool.config import load_config
from dettool.config import schema as C
from dettool.errors import ConfigError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.models.backbones.context_block import ContextBlock
from dettool.trainer.models.backbones.resnet import ResNet


def block(channels: int = 16, ratio: float = 0.25, pooling_type: str = "att",
          fusion_types: tuple[str, ...] = ("channel_add",)) -> ContextBlock:
    return ContextBlock(channels, ratio=ratio, pooling_type=pooling_type, fusion_types=fusion_types)


def randomize(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.5)


def test_shapes_and_bottleneck_width():
    gcb = block(64, ratio=1 / 16, fusion_types=("channel_add", "channel_mul"))
    assert gcb.planes == 4
    assert gcb.channel_add_conv[0].out_channels == 4 and gcb.channel_mul_conv[3].out_channels == 64
    x = torch.randn(2, 64, 5, 7)
    assert gcb(x).shape == (2, 64, 5, 7)
    assert gcb.spatial_pool(x).shape == (2, 64, 1, 1)


def test_a_new_block_is_the_identity():
    """The last conv of the transform starts at zero (mmcv's last_zero_init)."""
    gcb = block(16, fusion_types=("channel_add",))
    x = torch.randn(2, 16, 6, 6)
    torch.testing.assert_close(gcb(x), x)


def test_attention_pooling_by_hand():
    """Mask logits [0, ln 3] (the first channel) weight the two positions 1/4 and 3/4."""
    gcb = block(2, ratio=0.5)
    with torch.no_grad():
        gcb.conv_mask.weight.copy_(torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
        gcb.conv_mask.bias.zero_()
    x = torch.tensor([[0.0, math.log(3.0)], [4.0, 8.0]]).view(1, 2, 1, 2)
    expected = torch.tensor([0.75 * math.log(3.0), 0.25 * 4.0 + 0.75 * 8.0]).view(1, 2, 1, 1)
    torch.testing.assert_close(gcb.spatial_pool(x), expected)
    avg = block(2, ratio=0.5, pooling_type="avg")
    torch.testing.assert_close(avg.spatial_pool(x), torch.tensor([math.log(3.0) / 2, 6.0]).view(1, 2, 1, 1))


def test_fusion_adds_and_scales_the_same_vector_at_every_position():
    gcb = block(8, ratio=0.5, fusion_types=("channel_add", "channel_mul"))
    randomize(gcb)
    x = torch.randn(1, 8, 3, 4)
    with torch.no_grad():
        context = gcb.spatial_pool(x)
        scale = torch.sigmoid(gcb.channel_mul_conv(context))
        shift = gcb.channel_add_conv(context)
        torch.testing.assert_close(gcb(x), x * scale + shift)
    assert not torch.allclose(shift[0, :, 0, 0], shift[0, 0, 0, 0].expand(8))  # a vector, not a constant


@pytest.mark.parametrize("pooling_type,fusion_types", [("att", ("channel_add",)), ("avg", ("channel_mul",)),
                                                       ("att", ("channel_add", "channel_mul"))])
def test_equals_mmcv_context_block_on_the_same_weights(pooling_type, fusion_types):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmcv.cnn.bricks.context_block import ContextBlock as MMCVContextBlock

    reference = MMCVContextBlock(32, 1 / 4, pooling_type, fusion_types).double()
    randomize(reference)
    ours = block(32, ratio=1 / 4, pooling_type=pooling_type, fusion_types=fusion_types).double()
    ours.load_state_dict(reference.state_dict())  # strict: the same parameter names and shapes
    x = torch.randn(2, 32, 7, 9, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-12, rtol=0)


def test_in_resnet_50_res3_to_res5_after_conv3():
    torch.manual_seed(0)
    plain = build_backbone(C.ResNetConfig(depth=50, norm="bn", frozen_stages=-1, out_indices=(0, 1, 2, 3))).eval()
    torch.manual_seed(0)
    gcnet = build_backbone(C.ResNetConfig(depth=50, norm="bn", frozen_stages=-1, out_indices=(0, 1, 2, 3),
                                          plugins=(C.ContextBlockPluginConfig(),))).eval()
    for i, stage in enumerate(gcnet.stages):
        for b in stage:
            assert len(b.after_conv3) == (i > 0)
            if i > 0:
                assert isinstance(b.after_conv3[0], ContextBlock)
                assert (b.after_conv3[0].in_channels, b.after_conv3[0].planes) == (256 * 2 ** i, 16 * 2 ** i)
    assert "layer2.0.after_conv3.0.channel_add_conv.1.weight" in gcnet.state_dict()  # the LayerNorm
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        ref = plain(x)
        for a, b in zip(ref, gcnet(x)):  # the new blocks are the identity
            torch.testing.assert_close(a, b)
        gcnet.layer3[0].after_conv3[0].channel_add_conv[3].bias.fill_(1.0)
        outs = gcnet(x)
    torch.testing.assert_close(outs[1], ref[1])  # res3: before the changed block
    assert not torch.allclose(outs[2], ref[2])


def test_torchvision_weights_load_without_the_blocks(tmp_path):
    """A classification ResNet has no context blocks: they keep their initialisation."""
    path = tmp_path / "r18.pth"
    torch.save(ResNet(depth=18, groups=1, width_per_group=64, style="pytorch", norm="bn", gn_groups=32,
                      norm_eval=False, frozen_stages=-1, out_indices=(3,)).state_dict(), path)
    cfg = C.ResNetConfig(depth=18, norm="bn", plugins=(C.ContextBlockPluginConfig(position="after_conv2"),),
                         weights=str(path))
    model = build_backbone(cfg)
    assert isinstance(model.layer4[1].after_conv2[0], ContextBlock)


def plugin_config(*sets: str):
    return load_config(CONFIGS / "faster_rcnn_r18_fpn_synth.yaml", list(sets))


def test_yaml_plugin_with_defaults_and_a_basic_block_position():
    cfg = plugin_config("model.backbone.plugins=[{type: context_block, position: after_conv2}]")
    plugin = cfg.model.backbone.plugins[0]
    assert plugin == C.ContextBlockPluginConfig(position="after_conv2")
    assert (plugin.ratio, plugin.stages, plugin.pooling_type, plugin.fusion_types) == (
        1 / 16, (False, True, True, True), "att", ("channel_add",))


@pytest.mark.parametrize("value,key,message", [
    ("{type: context_block, ratio: 0}", "ratio", "must be > 0"),
    ("{type: context_block, ratio: 1.5}", "ratio", "<= 1"),
    ("{type: context_block, pooling_type: max}", "pooling_type", "not one of"),
    ("{type: context_block, fusion_types: []}", "fusion_types", "channel_add and / or channel_mul"),
    ("{type: context_block, fusion_types: [channel_add, channel_add]}", "fusion_types", "once each"),
    ("{type: context_block, fusion_types: [channel_sub]}", "fusion_types[0]", "not one of"),
    ("{type: context_block, position: conv2}", "position", "not one of"),
    ("{type: context_block, stages: [true, true]}", "stages", "4 items"),
    ("{type: context_blok}", "type", "did you mean 'context_block'"),
])
def test_bad_values_are_refused_naming_the_key(value, key, message):
    with pytest.raises(ConfigError, match=re.escape(f"model.backbone.plugins[0].{key}: ") + f".*{message}"):
        plugin_config(f"model.backbone.plugins=[{value}]")


def test_a_position_the_block_lacks_is_refused():
    with pytest.raises(ValueError, match="no after_conv3 position"):
        build_backbone(C.ResNetConfig(depth=18, plugins=(C.ContextBlockPluginConfig(),)))
