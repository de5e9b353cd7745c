"""The one-node ONNX graphs the TensorRT tests feed the parser are valid ONNX and carry exactly
the attributes docs/custom_ops.md lists (plus plugin_namespace / plugin_version). Runs without
TensorRT."""
from __future__ import annotations

import onnx
import torch
from dettool_trt_engine import (
    batched_nms_graph,
    modulated_deform_conv_graph,
    multi_level_roi_align_graph,
    ps_roi_align_graph,
)

SPEC_ATTRIBUTES = {
    "DettoolBatchedNMS": {"score_threshold", "iou_threshold", "max_output_boxes"},
    "DettoolMultiLevelRoIAlign": {"output_height", "output_width", "featmap_strides", "sampling_ratio",
                                  "finest_scale", "aligned"},
    "DettoolModulatedDeformConv": {"stride", "padding", "dilation", "groups", "deform_groups"},
    "DettoolPSRoIAlign": {"output_size", "spatial_scale", "sampling_ratio"},
}


def check(graph) -> onnx.NodeProto:
    model = graph.to_onnx()
    onnx.checker.check_model(model)
    node = model.graph.node[0]
    assert node.domain == "dettool" and node.op_type == graph.op_type
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    assert attrs.pop("plugin_namespace") == b"dettool" and attrs.pop("plugin_version") == b"1"
    assert set(attrs) == SPEC_ATTRIBUTES[node.op_type]
    return node


def test_graphs_are_valid_onnx():
    check(batched_nms_graph(80, False, 0.05, 0.5, 100))
    check(batched_nms_graph(80, True, 0.05, 0.5, 100))
    check(multi_level_roi_align_graph(torch.float16, 256, [(200, 304), (100, 152), (50, 76), (25, 38)],
                                      [4, 8, 16, 32], (7, 7), 0, 56, True))
    node = check(modulated_deform_conv_graph(torch.zeros(8, 4, 3, 3), torch.zeros(8), (20, 20), (20, 20),
                                             (1, 1), (1, 1), (1, 1), 2, 1))
    assert list(node.input) == ["input", "offset", "mask", "weight", "bias"]
    node = check(ps_roi_align_graph(torch.float16, 10, 7, 1 / 16, 2))
    assert list(node.input) == ["features", "rois"]
