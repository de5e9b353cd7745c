"""Stage plugins put blocks into chosen ResNet stages at chosen positions; neck sequences chain necks."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from dettool.config import schema as C
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.builder.necks import build_neck
from dettool.trainer.models.backbones.deform_conv import DeformConv2dPack
from dettool.trainer.models.backbones.stage_plugins import StagePlugin


class Recorder(nn.Module):
    """A plugin that scales its input by 2 and remembers the channels it was built for."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert x.shape[1] == self.channels
        self.calls += 1
        return 2 * x


def _resnet(depth: int, plugins: list[StagePlugin]):
    torch.manual_seed(0)
    backbone = build_backbone(C.ResNetConfig(depth=depth, norm="bn", frozen_stages=-1))
    from dettool.trainer.models.backbones.stage_plugins import apply_plugins

    apply_plugins(backbone.stages, plugins)
    return backbone.eval()


@pytest.mark.parametrize("depth,position,channels", [(18, "after_conv1", (64, 128, 256, 512)),
                                                     (18, "after_conv2", (64, 128, 256, 512)),
                                                     (50, "after_conv3", (256, 512, 1024, 2048)),
                                                     (50, "after_conv2", (64, 128, 256, 512))])
def test_after_conv_plugins_go_into_every_block_of_the_chosen_stages(depth, position, channels):
    model = _resnet(depth, [StagePlugin(position=position, stages=(False, True, False, True), build=Recorder)])
    for i, stage in enumerate(model.stages):
        for block in stage:
            slot = getattr(block, position)
            assert len(slot) == (1 if i in (1, 3) else 0)
            if len(slot):
                assert slot[0].channels == channels[i]
    with torch.no_grad():
        model(torch.randn(1, 3, 64, 64))
    assert all(m.calls == 1 for m in model.modules() if isinstance(m, Recorder))


def test_empty_plugin_slots_leave_the_network_and_its_state_dict_unchanged():
    plain = _resnet(50, [])
    plugged = _resnet(50, [StagePlugin(position="after_conv3", stages=(False,) * 4, build=Recorder)])
    assert plain.state_dict().keys() == plugged.state_dict().keys()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(plain(x), plugged(x)):
            torch.testing.assert_close(a, b)


def test_a_plugin_changes_the_output_where_it_sits():
    plain = _resnet(18, [])
    doubled = _resnet(18, [StagePlugin(position="after_conv2", stages=(False, False, False, True), build=Recorder)])
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        a, b = plain(x), doubled(x)
    torch.testing.assert_close(a[0], b[0])  # res3: before the plugged stage
    assert not torch.allclose(a[2], b[2])  # res5: after it


def test_dcn_plugin_from_config_replaces_the_3x3_convs():
    cfg = C.ResNetConfig(depth=50, plugins=(C.DCNPluginConfig(stages=(False, False, True, True), modulated=False),))
    model = build_backbone(cfg)
    for i, stage in enumerate(model.stages):
        for block in stage:
            assert isinstance(block.conv2, DeformConv2dPack) == (i >= 2)
            if i >= 2:
                assert not block.conv2.modulated
    assert model.layer3[0].conv2.stride == 2 and model.layer3[1].conv2.stride == 1


def test_plugin_with_the_wrong_number_of_stage_flags_is_refused():
    with pytest.raises(ValueError, match="stage flags"):
        _resnet(18, [StagePlugin(position="after_conv1", stages=(True, True), build=Recorder)])


def test_neck_sequence_chains_necks_and_reports_the_last_channels():
    fpn = C.FPNConfig(out_channels=16, num_outs=4, add_extra_convs="none")
    neck = build_neck((fpn, C.FPNConfig(out_channels=8, num_outs=4, add_extra_convs="none")), (64, 128, 256))
    assert neck.out_channels == (8, 8, 8, 8)
    feats = [torch.randn(1, c, s, s) for c, s in ((64, 32), (128, 16), (256, 8))]
    with torch.no_grad():
        outs = neck(feats)
    assert [tuple(o.shape) for o in outs] == [(1, 8, s, s) for s in (32, 16, 8, 4)]


def test_neck_sequence_loads_from_yaml(tmp_path):
    from dettool.config import load_config

    path = tmp_path / "cfg.yaml"
    path.write_text("""\
model:
  type: two_stage
  num_classes: 3
  neck:
    - {type: fpn, out_channels: 32, num_outs: 5, add_extra_convs: none}
    - {type: fpn, out_channels: 32, num_outs: 5, add_extra_convs: none}
data:
  train: {ann_file: a.json, img_dir: a}
  val: {ann_file: a.json, img_dir: a}
""")
    cfg = load_config(path)
    assert isinstance(cfg.model.neck, tuple) and len(cfg.model.neck) == 2
    from dettool.trainer import builder

    model = builder.build_model(cfg)
    assert model.rpn_head.in_channels == 32
