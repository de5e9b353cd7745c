"""runtime.ort_custom_ops on hand-built ONNX graphs: the model adaptation, FP16, errors."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper

from dettool.errors import DettoolError
from dettool.ops import batched_nms, multi_level_roi_align, ps_roi_align
from dettool.runtime.ort_custom_ops import CONTRIB_DOMAIN, MAX_FEATURE_LEVELS, adapt_model, make_session

STRIDES = [4, 8, 16]


def roi_align_model(feat_type: int = TensorProto.FLOAT, num_levels: int = 3, value_info: bool = True,
                    roi_scale_factor: float | None = None) -> onnx.ModelProto:
    """``rois [R, 5]`` and ``f0 .. f{L-1}`` -> Identity -> DettoolMultiLevelRoIAlign -> ``pooled``
    (``roi_scale_factor`` None: the node has no such attribute)."""
    feats = [f"f{i}" for i in range(num_levels)]
    rescaling = {} if roi_scale_factor is None else {"roi_scale_factor": roi_scale_factor}
    nodes = [helper.make_node("Identity", ["rois"], ["rois_copy"]),
             helper.make_node("DettoolMultiLevelRoIAlign", ["rois_copy", *feats], ["pooled"], name="roi_align",
                              domain="dettool", output_height=7, output_width=5,
                              featmap_strides=[4 * 2 ** i for i in range(num_levels)], sampling_ratio=2,
                              finest_scale=56, aligned=1, plugin_namespace="dettool", plugin_version="1",
                              **rescaling)]
    inputs = [helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["R", 5])]
    inputs += [helper.make_tensor_value_info(f, feat_type, ["B", 4, f"H{i}", f"W{i}"]) for i, f in enumerate(feats)]
    infos = [helper.make_tensor_value_info("rois_copy", TensorProto.FLOAT, ["R", 5])] if value_info else []
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("pooled", feat_type, None)],
                              value_info=infos)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dettool", 1)],
                             ir_version=10)


def nms_model(box_type: int = TensorProto.FLOAT) -> onnx.ModelProto:
    node = helper.make_node("DettoolBatchedNMS", ["boxes", "scores"], ["num", "boxes_out", "scores_out", "classes"],
                            domain="dettool", score_threshold=0.1, iou_threshold=0.5, max_output_boxes=5)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("boxes", box_type, None),
                                            helper.make_tensor_value_info("scores", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("num", TensorProto.INT32, None),
                               helper.make_tensor_value_info("boxes_out", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("scores_out", TensorProto.FLOAT, None),
                               helper.make_tensor_value_info("classes", TensorProto.INT32, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dettool", 1)],
                             ir_version=10)


def roi_align_feed(dtype=np.float32) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(0)
    rois = torch.tensor([[0, 4.0, 4, 40, 30], [1, 10, 20, 150, 130], [0, 0, 0, 300, 250], [1, 50, 50, 52, 52]])
    feeds = {f"f{i}": torch.randn(2, 4, 128 // s, 96 // s, generator=g).numpy().astype(dtype)
             for i, s in enumerate(STRIDES)}
    return {"rois": rois.numpy(), **feeds}


def reference_roi_align(feed: dict[str, np.ndarray], roi_scale_factor: float = 1.0) -> np.ndarray:
    feats = [torch.from_numpy(feed[f"f{i}"]) for i in range(len(STRIDES))]
    return multi_level_roi_align(torch.from_numpy(feed["rois"]), feats, 7, 5, STRIDES, 2, 56, True,
                                 roi_scale_factor).numpy()


def test_dettool_nodes_become_python_ops_and_the_model_is_not_changed() -> None:
    model = roi_align_model()
    before = model.SerializeToString()
    adapted = adapt_model(model)
    assert model.SerializeToString() == before
    node = next(n for n in adapted.graph.node if n.name == "roi_align")
    assert (node.domain, node.op_type) == (CONTRIB_DOMAIN, "DettoolMultiLevelRoIAlign_L3")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["featmap_strides"] == b"4,8,16" and attrs["aligned"] == 1
    assert attrs["roi_scale_factor"] == 1.0  # optional in the node, given to the Python op
    assert "plugin_namespace" not in attrs and "plugin_version" not in attrs
    assert {o.domain for o in adapted.opset_import} == {"", CONTRIB_DOMAIN}


def test_session_from_a_file_matches_the_reference_and_leaves_the_file(tmp_path) -> None:
    path = tmp_path / "roi_align.onnx"
    onnx.save(roi_align_model(), path)
    before = path.read_bytes()
    feed = roi_align_feed()
    (pooled,) = make_session(path).run(None, feed)
    np.testing.assert_array_equal(pooled, reference_roi_align(feed))
    assert path.read_bytes() == before


def test_values_without_type_are_inferred() -> None:
    feed = roi_align_feed()
    (pooled,) = make_session(roi_align_model(value_info=False)).run(None, feed)
    np.testing.assert_array_equal(pooled, reference_roi_align(feed))


def test_float16_features_are_cast_around_the_python_op() -> None:
    model = roi_align_model(TensorProto.FLOAT16)
    casts = [n for n in adapt_model(model).graph.node if n.op_type == "Cast"]
    assert len(casts) == 4  # three feature levels in, the pooled features out
    feed = roi_align_feed(np.float16)
    (pooled,) = make_session(model).run(None, feed)
    assert pooled.dtype == np.float16
    np.testing.assert_array_equal(pooled, reference_roi_align(feed))  # the reference also pools in float32


@pytest.mark.parametrize("feat_type, dtype", [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)])
def test_roi_scale_factor(feat_type: int, dtype) -> None:
    feed = roi_align_feed(dtype)
    (pooled,) = make_session(roi_align_model(feat_type, roi_scale_factor=1.3)).run(None, feed)
    want = reference_roi_align(feed, 1.3)
    np.testing.assert_array_equal(pooled, want)
    assert not np.array_equal(want, reference_roi_align(feed))


def test_nms_takes_float16_boxes() -> None:
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(2, 20, 2, generator=g) * 50
    boxes = torch.cat([xy, xy + 20], dim=-1).half()
    scores = torch.rand(2, 20, 3, generator=g)
    outputs = make_session(nms_model(TensorProto.FLOAT16)).run(None, {"boxes": boxes.numpy(), "scores": scores.numpy()})
    for out, ref in zip(outputs, batched_nms(boxes, scores, 0.1, 0.5, 5)):
        np.testing.assert_array_equal(out, ref.numpy())


def test_portable_models_pass_through() -> None:
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)
    assert adapt_model(model) is model
    (y,) = make_session(model).run(None, {"x": np.array([-1.0, 2.0], np.float32)})
    assert y.tolist() == [0.0, 2.0]


def test_unsupported_graphs_raise_dettool_errors() -> None:
    unknown = roi_align_model()
    unknown.graph.node[1].op_type = "DettoolSomethingElse"
    with pytest.raises(DettoolError, match="DettoolSomethingElse"):
        adapt_model(unknown)
    with pytest.raises(DettoolError, match="'boxes' is INT64"):
        adapt_model(nms_model(TensorProto.INT64))
    with pytest.raises(DettoolError, match=f"ONNX Runtime runs 1 to {MAX_FEATURE_LEVELS}"):
        adapt_model(roi_align_model(num_levels=MAX_FEATURE_LEVELS + 1))


def test_an_error_inside_a_python_op_is_raised_and_the_session_survives() -> None:
    # An exception escaping an onnxruntime-extensions Python op would abort the process.
    session = make_session(nms_model())
    disjoint = np.array([[[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10], [60, 0, 70, 10]]], np.float32)
    good = {"boxes": disjoint, "scores": np.ones((1, 4, 2), np.float32)}
    with pytest.raises(DettoolError, match="boxes must be"):
        session.run(None, {"boxes": np.zeros((1, 4, 5), np.float32), "scores": good["scores"]})
    num_dets, *_ = session.run(None, good)
    assert num_dets.tolist() == [5]  # 8 candidates, K = 5


def ps_roi_align_model(feat_type: int = TensorProto.FLOAT, channels: int = 18) -> onnx.ModelProto:
    """``features [B, channels, H, W]`` and ``rois [R, 5]`` -> DettoolPSRoIAlign (k = 3) -> ``pooled``,
    the RoIs' type left to inference."""
    nodes = [helper.make_node("Identity", ["rois"], ["rois_copy"]),
             helper.make_node("DettoolPSRoIAlign", ["features", "rois_copy"], ["pooled"], name="ps_roi_align",
                              domain="dettool", output_size=3, spatial_scale=0.25, sampling_ratio=0,
                              plugin_namespace="dettool", plugin_version="1")]
    inputs = [helper.make_tensor_value_info("features", feat_type, ["B", channels, "H", "W"]),
              helper.make_tensor_value_info("rois", TensorProto.FLOAT, ["R", 5])]
    graph = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("pooled", feat_type, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19), helper.make_opsetid("dettool", 1)],
                             ir_version=10)


def ps_roi_align_feed(dtype=np.float32) -> dict[str, np.ndarray]:
    g = torch.Generator().manual_seed(2)
    rois = torch.tensor([[0, 4.0, 4, 40, 30], [1, 10.5, 20.25, 90, 70], [0, -20, -10, 300, 250],
                         [1, 50, 50, 50, 50], [2, 10, 10, 40, 40]])  # a point and a RoI outside the batch: zeros
    return {"features": torch.randn(2, 18, 24, 32, generator=g).numpy().astype(dtype), "rois": rois.numpy()}


def test_ps_roi_align_node_becomes_a_python_op() -> None:
    adapted = adapt_model(ps_roi_align_model())
    node = next(n for n in adapted.graph.node if n.name == "ps_roi_align")
    assert (node.domain, node.op_type) == (CONTRIB_DOMAIN, "DettoolPSRoIAlign")
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs == {"output_size": 3, "spatial_scale": 0.25, "sampling_ratio": 0}


@pytest.mark.parametrize("feat_type, dtype", [(TensorProto.FLOAT, np.float32), (TensorProto.FLOAT16, np.float16)])
def test_ps_roi_align_matches_the_torch_op(feat_type: int, dtype) -> None:
    model = ps_roi_align_model(feat_type)
    casts = [n for n in adapt_model(model).graph.node if n.op_type == "Cast"]
    assert len(casts) == (2 if feat_type == TensorProto.FLOAT16 else 0)  # the features in, the pooled out
    feed = ps_roi_align_feed(dtype)
    (pooled,) = make_session(model).run(None, feed)
    want = ps_roi_align(torch.from_numpy(feed["features"]), torch.from_numpy(feed["rois"]), 3, 0.25, 0).numpy()
    assert pooled.dtype == dtype and pooled.shape == (5, 2, 3, 3)
    np.testing.assert_array_equal(pooled, want)  # the reference also pools in float32
    assert (pooled[3:] == 0).all() and not np.isnan(pooled).any()


def test_ps_roi_align_input_errors_are_raised() -> None:
    session = make_session(ps_roi_align_model(channels=16))
    feed = ps_roi_align_feed()
    feed["features"] = feed["features"][:, :16]
    with pytest.raises(DettoolError, match="not a multiple of output_size"):
        session.run(None, feed)
