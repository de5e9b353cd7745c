"""The FP16 conversion keeps float32 regions float32 end to end, values between them included."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from detector_helpers import CONFIGS, random_detector, tiny_sets
from onnx import TensorProto, helper

from dettool.config import load_config
from dettool.exporters.deploy.detector import build_deploy_model
from dettool.exporters.fp16 import CLASS_KEY, convert_to_fp16
from dettool.exporters.torch2onnx import example_inputs, trace_to_onnx
from dettool.runtime.ort_custom_ops import make_session
from dettool.trainer import builder  # noqa: F401  (defines the detectors' Float32Block modules)
from dettool.trainer.models.postprocess.batched import float32_block_classes


def _node(op: str, inputs: list[str], output: str, fp32_block: bool) -> onnx.NodeProto:
    node = helper.make_node(op, inputs, [output], name=f"node_{output}")
    if fp32_block:
        entry = node.metadata_props.add()
        entry.key, entry.value = CLASS_KEY, repr([sorted(float32_block_classes())[0]])
    return node


def _model() -> onnx.ModelProto:
    """``boxes = (x * 1.5 + 0.25) * 1`` in three float32-block nodes (values past 512, where fp16
    steps are 0.5), ``feat = relu(x)`` in FP16; both outputs float32."""
    consts = [helper.make_tensor(n, TensorProto.FLOAT, [1], [v]) for n, v in (("s", 1.5), ("o", 0.25), ("u", 1.0))]
    nodes = [_node("Mul", ["x", "s"], "a", True), _node("Add", ["a", "o"], "b", True),
             _node("Mul", ["b", "u"], "boxes", True), _node("Relu", ["x"], "feat", False)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                              [helper.make_tensor_value_info(n, TensorProto.FLOAT, [6]) for n in ("boxes", "feat")],
                              consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


def test_values_between_float32_nodes_are_not_rounded_to_fp16() -> None:
    model = convert_to_fp16(_model())
    onnx.checker.check_model(model, full_check=True)
    producer = {o: n for n in model.graph.node for o in n.output}
    for node in model.graph.node:  # no float32 -> float16 -> float32 detour is left
        if node.op_type == "Cast" and node.input[0] in producer:
            assert producer[node.input[0]].op_type != "Cast", node.name
    x = np.array([500.3, 700.1, 1021.7, 3.3, -2.0, 1500.9], dtype=np.float32)
    boxes, _ = make_session(model).run(None, {"x": x})
    np.testing.assert_array_equal(boxes, x * np.float32(1.5) + np.float32(0.25))
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    relu = next(n for n in model.graph.node if n.op_type == "Relu")
    assert types[relu.input[0]] == TensorProto.FLOAT16  # the unblocked node does run in FP16


def test_integer_division_written_in_float_stays_exact() -> None:
    """TopK indices past 2048 divided by the class count the way the exporter writes floor
    division (Cast to float, Div, Floor, Cast back): still float32 after the conversion."""
    consts = [helper.make_tensor("k", TensorProto.INT64, [1], [4]),
              helper.make_tensor("c", TensorProto.FLOAT, [], [3.0])]
    nodes = [helper.make_node("TopK", ["x", "k"], ["vals", "idx"], axis=0),
             helper.make_node("Cast", ["idx"], ["idx_f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["idx_f", "c"], ["q"]), helper.make_node("Floor", ["q"], ["q_floor"]),
             helper.make_node("Cast", ["q_floor"], ["rows"], to=TensorProto.INT64)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [30000])],
                              [helper.make_tensor_value_info("rows", TensorProto.INT64, [4])], consts)
    model = convert_to_fp16(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10))
    x = np.zeros(30000, dtype=np.float32)
    x[[29999, 20001, 7777, 4097]] = [4.0, 3.0, 2.0, 1.0]
    (rows,) = make_session(model).run(None, {"x": x})
    assert rows.tolist() == [9999, 6667, 2592, 1365]
    # ONNX Runtime's CPU may upcast float16 arithmetic itself; TensorRT would not: the chain must stay float32
    casts = [a.i for n in model.graph.node if n.op_type == "Cast" for a in n.attribute if a.name == "to"]
    assert casts == [TensorProto.FLOAT, TensorProto.INT64]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["mask_rcnn_r18_fpn_synth", "cascade_rcnn_r18_fpn_synth", "rfcn_r18_synth"])
def test_only_the_image_is_rounded_to_fp16_in_a_two_stage_graph(name, tiny_synth):
    """In a converted deploy graph every float32 value that reaches an FP16 node is the input image
    (the converter's one cast to float16): no RoI coordinate, score, decoded box or image shape is
    rounded on its way back into the network (what the FP16 study of issue 13 checked on trained models)."""
    cfg = load_config(CONFIGS / f"{name}.yaml", tiny_sets(tiny_synth))
    deploy = build_deploy_model(random_detector(cfg))
    model = convert_to_fp16(trace_to_onnx(deploy, example_inputs(cfg, 1), False, False, cfg.data.size_divisor))
    to_fp16 = [n.input[0] for n in model.graph.node
               if n.op_type == "Cast" and any(a.name == "to" and a.i == TensorProto.FLOAT16 for a in n.attribute)]
    assert to_fp16 == ["images"]
