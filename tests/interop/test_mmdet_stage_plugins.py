"""MMDetection's ResNet ``plugins`` (GCNet's ContextBlock, GeneralizedAttention) translated to dettool's
stage plugins: the config entries and the weight names (without building MMDetection's model; the
equivalence of whole converted models is tests/interop/test_mmdet_equivalence.py's)."""
from __future__ import annotations

import copy
import importlib.util
from pathlib import Path

import pytest

from dettool.errors import ConfigError
from dettool.interop.mmdet_config import read_mmdet_config
from dettool.interop.mmdet_convert import _rename, translate_config

pytestmark = pytest.mark.skipif(importlib.util.find_spec("mmdet") is None, reason="MMDetection is not installed")


def shipped(name: str) -> dict:
    return read_mmdet_config(Path(importlib.util.find_spec("mmdet").origin).parent / ".mim" / "configs" / name)


GCNET = "gcnet/mask-rcnn_r50-gcb-r16-c3-c5_fpn_1x_coco.py"
ATTENTION = "empirical_attention/faster-rcnn_r50-attn1111_fpn_1x_coco.py"


def test_gcnet_context_blocks_and_their_weight_names():
    t = translate_config(shipped(GCNET), GCNET)
    assert t.config["model"]["backbone"]["plugins"] == [
        {"type": "context_block", "ratio": 1 / 16, "pooling_type": "att", "fusion_types": ["channel_add"],
         "stages": [False, True, True, True], "position": "after_conv3"}]
    assert _rename(t.rules, "backbone.layer3.5.context_block.channel_add_conv.1.weight") == (
        "backbone.layer3.5.after_conv3.0.channel_add_conv.1.weight")
    assert _rename(t.rules, "backbone.layer2.0.conv_mask.weight") == "backbone.layer2.0.conv_mask.weight"


def test_attention_with_dcn_keeps_both():
    name = "empirical_attention/faster-rcnn_r50-attn0010-dcn_fpn_1x_coco.py"
    plugins = translate_config(shipped(name), name).config["model"]["backbone"]["plugins"]
    assert [p["type"] for p in plugins] == ["dcn", "generalized_attention"]
    assert plugins[1] == {"type": "generalized_attention", "attention_type": "0010", "num_heads": 8, "kv_stride": 2,
                          "q_stride": 1, "position_embedding_dim": None, "position_magnitude": 1,
                          "stages": [False, False, True, True], "position": "after_conv2"}


def test_two_plugins_in_one_slot_keep_their_order():
    """A second ContextBlock (``postfix`` 2) after conv3 of res5 only: slot 1 there, slot 0 elsewhere."""
    cfg = shipped(GCNET)
    plugins = cfg["model"]["backbone"]["plugins"]
    plugins.append({"cfg": {"type": "ContextBlock", "ratio": 0.25, "postfix": 2}, "stages": (False, False, True, True),
                    "position": "after_conv3"})
    t = translate_config(cfg, GCNET)
    assert [p["ratio"] for p in t.config["model"]["backbone"]["plugins"]] == [1 / 16, 0.25]
    assert _rename(t.rules, "backbone.layer4.1.context_block2.conv_mask.bias") == (
        "backbone.layer4.1.after_conv3.1.conv_mask.bias")
    assert _rename(t.rules, "backbone.layer4.1.context_block.conv_mask.bias") == (
        "backbone.layer4.1.after_conv3.0.conv_mask.bias")
    assert _rename(t.rules, "backbone.layer2.1.context_block.conv_mask.bias") == (
        "backbone.layer2.1.after_conv3.0.conv_mask.bias")


@pytest.mark.parametrize("change,key,message", [
    ({"spatial_range": 4}, "cfg.spatial_range", "not implemented"),
    ({"attention_type": "0100"}, "cfg.attention_type", "differs in mmcv"),
    ({"type": "NonLocal2d"}, "cfg.type", "plugin 'NonLocal2d' is not implemented"),
    ({"kv_scale": 2}, "cfg.kv_scale", "not implemented"),
])
def test_what_dettool_does_not_implement_is_refused_naming_it(change, key, message):
    cfg = copy.deepcopy(shipped(ATTENTION))
    cfg["model"]["backbone"]["plugins"][0]["cfg"].update(change)
    with pytest.raises(ConfigError, match=rf"model\.backbone\.plugins\[0\]\.{key}: .*{message}"):
        translate_config(cfg, ATTENTION)


def test_a_plugin_position_dettool_lacks_is_refused():
    cfg = copy.deepcopy(shipped(GCNET))
    cfg["model"]["backbone"]["plugins"][0]["position"] = "after_conv4"
    with pytest.raises(ConfigError, match=r"plugins\[0\]\.position: 'after_conv4' is not implemented"):
        translate_config(cfg, GCNET)
