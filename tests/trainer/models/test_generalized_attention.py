"""Generalized attention: every switch combination against a loop over query / key pairs, mmcv's
GeneralizedAttention on the same weights, the module as a ResNet stage plugin, its config's checks,
and an ONNX graph exported at one size that is right at another."""
from __future__ import annotations

import itertools
import math
import re

import pytest
import torch
from detector_helpers import CONFIGS

from dettool.config import load_config
from dettool.config import schema as C
from dettool.errors import ConfigError
from dettool.trainer.builder.backbones import build_backbone
from dettool.trainer.models.backbones.generalized_attention import (
    GeneralizedAttention,
    relative_position_embedding,
)

ALL_TYPES = ["".join(bits) for bits in itertools.product("01", repeat=4) if "1" in bits]
# mmcv adds the row term of '0100' (query content and position without the position bias) with the
# queries transposed: those types are compared with the loop only (and refused by dettool convert)
MMCV_TYPES = [t for t in ALL_TYPES if not (t[1] == "1" and t[3] == "0")]


def attention(channels: int = 16, attention_type: str = "1111", num_heads: int = 2, kv_stride: int = 2,
              q_stride: int = 1, position_embedding_dim: int | None = None, position_magnitude: int = 1,
              gamma: float = 0.7) -> GeneralizedAttention:
    torch.manual_seed(0)
    module = GeneralizedAttention(channels, num_heads=num_heads, attention_type=attention_type, kv_stride=kv_stride,
                                  q_stride=q_stride, position_embedding_dim=position_embedding_dim,
                                  position_magnitude=position_magnitude).double()
    with torch.no_grad():
        module.gamma.fill_(gamma)
    return module


def test_position_embedding_by_hand():
    """Offsets (query at i * 1, key at j * 2) 0 and 1, dim 8: sines then cosines at periods 1 and sqrt(1000)."""
    emb = relative_position_embedding(2, 1, 1, 2, 1, 8, device=torch.device("cpu"), dtype=torch.float64)
    assert emb.shape == (2, 1, 4)
    s = math.sqrt(1000.0)
    expected = torch.tensor([[[0.0, 0.0, 1.0, 1.0]], [[math.sin(1), math.sin(1 / s), math.cos(1), math.cos(1 / s)]]],
                            dtype=torch.float64)
    torch.testing.assert_close(emb, expected)
    doubled = relative_position_embedding(2, 1, 1, 2, 2, 8, device=torch.device("cpu"), dtype=torch.float64)
    torch.testing.assert_close(doubled[1, 0, 0], torch.tensor(math.sin(2), dtype=torch.float64))  # magnitude 2


def loop_reference(m: GeneralizedAttention, x: torch.Tensor) -> torch.Tensor:
    """The module's output from the paper's sum, one query / key pair at a time (``q_stride`` 1)."""
    n, c, h, w = x.shape
    s, heads, d = m.kv_stride, m.num_heads, m.qk_embed_dim
    kv_pos = [(i, j) for i in range(0, h, s) for j in range(0, w, s)]
    on = [ch == "1" for ch in m.attention_type]
    dim = m.position_embedding_dim
    periods = 1000.0 ** (4 * torch.arange(dim // 4, dtype=x.dtype) / dim)

    def emb(offset: int) -> torch.Tensor:
        angles = offset * m.position_magnitude / periods
        return torch.cat([angles.sin(), angles.cos()])

    out = torch.zeros_like(x)
    for b in range(n):
        values = [m.value_conv.weight[:, :, 0, 0] @ x[b, :, i, j] for i, j in kv_pos]
        keys = [m.key_conv.weight[:, :, 0, 0] @ x[b, :, i, j] for i, j in kv_pos] if on[0] or on[2] else None
        for qi, qj in itertools.product(range(h), range(w)):
            query = m.query_conv.weight[:, :, 0, 0] @ x[b, :, qi, qj] if on[0] or on[1] else None
            attended = []
            for head in range(heads):
                sl = slice(head * d, (head + 1) * d)
                energies = []
                for k, (ki, kj) in enumerate(kv_pos):
                    if on[1] or on[3]:
                        geometry = (m.appr_geom_fc_x(emb(qj - kj)) + m.appr_geom_fc_y(emb(qi - ki))) / math.sqrt(2)
                    e = torch.zeros((), dtype=x.dtype)
                    e = e + (query[sl] @ keys[k][sl] if on[0] else 0)
                    e = e + (query[sl] @ geometry[sl] if on[1] else 0)
                    e = e + (m.appr_bias[sl] @ keys[k][sl] if on[2] else 0)
                    e = e + (m.geom_bias[sl] @ geometry[sl] if on[3] else 0)
                    energies.append(e)
                weights = torch.stack(energies).softmax(0)
                attended.append(sum(wt * v[sl] for wt, v in zip(weights, values)))
            projected = m.proj_conv.weight[:, :, 0, 0] @ torch.cat(attended) + m.proj_conv.bias
            out[b, :, qi, qj] = m.gamma * projected + x[b, :, qi, qj]
    return out


@pytest.mark.parametrize("attention_type", ALL_TYPES)
def test_every_switch_combination_equals_the_pairwise_sum(attention_type):
    m = attention(8, attention_type, num_heads=2)
    x = torch.randn(2, 8, 3, 4, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), loop_reference(m, x), atol=1e-10, rtol=0)


@pytest.mark.parametrize("q_stride", [1, 2])
@pytest.mark.parametrize("attention_type", MMCV_TYPES)
def test_equals_mmcv_generalized_attention_on_the_same_weights(attention_type, q_stride):
    from mmdet_reference import import_mmdet

    import_mmdet()
    from mmcv.cnn.bricks.generalized_attention import GeneralizedAttention as MMCVGeneralizedAttention

    torch.manual_seed(1)
    reference = MMCVGeneralizedAttention(32, num_heads=4, attention_type=attention_type, kv_stride=2,
                                         q_stride=q_stride, position_magnitude=2).double()
    with torch.no_grad():
        reference.gamma.fill_(0.7)
    ours = attention(32, attention_type, num_heads=4, q_stride=q_stride, position_magnitude=2)
    ours.load_state_dict(reference.state_dict())  # strict: the same parameter names and shapes
    x = torch.randn(2, 32, 9, 11, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), reference(x), atol=1e-12, rtol=0)


@pytest.mark.parametrize("attention_type,q_stride", [("1111", 1), ("1111", 2), ("0010", 1), ("0010", 2), ("0001", 2)])
def test_shapes_and_a_new_module_is_the_identity(attention_type, q_stride):
    m = attention(32, attention_type, num_heads=8, q_stride=q_stride)
    x = torch.randn(2, 32, 7, 10, dtype=torch.float64)
    with torch.no_grad():
        assert m(x).shape == x.shape
        assert not torch.allclose(m(x), x)
        m.gamma.zero_()
        torch.testing.assert_close(m(x), x)
    assert (m.qk_embed_dim, m.v_dim) == (4, 4)
    assert hasattr(m, "query_conv") == (attention_type[0] == "1" or attention_type[1] == "1")
    assert hasattr(m, "appr_geom_fc_x") == (attention_type[1] == "1" or attention_type[3] == "1")


def test_key_content_alone_gives_every_position_the_same_attended_vector():
    m = attention(16, "0010")
    x = torch.randn(1, 16, 6, 5, dtype=torch.float64)
    with torch.no_grad():
        added = m(x) - x
    torch.testing.assert_close(added, added[:, :, :1, :1].expand_as(added))


def test_bad_module_arguments_are_refused():
    with pytest.raises(ValueError, match="attention_type"):
        GeneralizedAttention(16, num_heads=2, attention_type="0000", kv_stride=2, q_stride=1,
                             position_embedding_dim=None, position_magnitude=1)
    with pytest.raises(ValueError, match="multiple of 4"):
        GeneralizedAttention(18, num_heads=2, attention_type="0001", kv_stride=2, q_stride=1,
                             position_embedding_dim=None, position_magnitude=1)


def test_in_resnet_50_res4_and_res5_after_conv2():
    torch.manual_seed(0)
    model = build_backbone(C.ResNetConfig(depth=50, norm="bn", frozen_stages=-1,
                                          plugins=(C.GeneralizedAttentionPluginConfig(attention_type="0010"),))).eval()
    for i, stage in enumerate(model.stages):
        for b in stage:
            assert len(b.after_conv2) == (i >= 2) and len(b.after_conv3) == 0
            if i >= 2:
                assert isinstance(b.after_conv2[0], GeneralizedAttention)
                assert b.after_conv2[0].value_conv.in_channels == 64 * 2 ** i
    assert "layer3.0.after_conv2.0.appr_bias" in model.state_dict()
    with torch.no_grad():
        for block in model.layer4:
            block.after_conv2[0].gamma.fill_(1.0)
        outs = model(torch.randn(1, 3, 32, 32))
    assert [tuple(o.shape) for o in outs] == [(1, 512, 4, 4), (1, 1024, 2, 2), (1, 2048, 1, 1)]


def plugin_config(*sets: str):
    return load_config(CONFIGS / "faster_rcnn_r18_fpn_synth.yaml", list(sets))


def test_yaml_plugin_with_defaults():
    cfg = plugin_config("model.backbone.plugins=[{type: generalized_attention, attention_type: '0010'}]")
    assert cfg.model.backbone.plugins[0] == C.GeneralizedAttentionPluginConfig(attention_type="0010")
    plugin = cfg.model.backbone.plugins[0]
    assert (plugin.stages, plugin.position, plugin.num_heads, plugin.kv_stride, plugin.q_stride) == (
        (False, False, True, True), "after_conv2", 8, 2, 1)


@pytest.mark.parametrize("value,key,message", [
    ("{type: generalized_attention, attention_type: '0000'}", "attention_type", "not all '0'"),
    ("{type: generalized_attention, attention_type: '10'}", "attention_type", "four '0' / '1' switches"),
    ("{type: generalized_attention, attention_type: '1021'}", "attention_type", "four '0' / '1' switches"),
    ("{type: generalized_attention, attention_type: 0010}", "attention_type", "expected a string"),  # YAML: 8
    ("{type: generalized_attention, num_heads: 0}", "num_heads", ">= 1"),
    ("{type: generalized_attention, kv_stride: 0}", "kv_stride", ">= 1"),
    ("{type: generalized_attention, position_embedding_dim: 6}", "position_embedding_dim", "multiple of 4"),
    ("{type: generalized_attention, position: conv2}", "position", "not one of"),
    ("{type: generalized_attention, spatial_range: 5}", "spatial_range", "unknown key"),
])
def test_bad_values_are_refused_naming_the_key(value, key, message):
    with pytest.raises(ConfigError, match=re.escape(f"model.backbone.plugins[0].{key}: ") + f".*{message}"):
        plugin_config(f"model.backbone.plugins=[{value}]")


@pytest.mark.slow
def test_onnx_graph_exported_at_one_size_is_right_at_another(tmp_path):
    """Position embeddings from the runtime size: traced with symbolic H and W at 12x16, run at
    20x8 and 7x9 (``slow``: torch.onnx.export(dynamo=True) traces for a minute)."""
    import onnxruntime as ort

    m = attention(16, "1111", num_heads=2, q_stride=2).float().eval()
    dims = {i: torch.export.Dim(name, min=2, max=256) for i, name in ((0, "n"), (2, "h"), (3, "w"))}
    program = torch.onnx.export(m, (torch.randn(2, 16, 12, 16),), dynamo=True, opset_version=19,
                                dynamic_shapes=(dims,), verbose=False)
    path = tmp_path / "attention.onnx"
    program.save(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for size in ((12, 16), (20, 8), (7, 9)):
        x = torch.randn(2, 16, *size)
        with torch.no_grad():
            expected = m(x).numpy()
        got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
        torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)
