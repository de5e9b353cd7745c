"""FP32 ONNX deploy graph -> FP16 graph for TensorRT's strongly typed builder (and ONNX Runtime).

TensorRT 11 has no FP16 builder flag: a network runs in FP16 where its ONNX tensors are FP16.
The conversion is onnxruntime's maintained ``convert_float_to_float16`` with:

- inputs and outputs kept float32 (``keep_io_types``);
- every node of a ``Float32Block`` module (box decoding, proposal and detection selection, RoI
  coordinates; found by the module class the exporter records on each node) kept float32, and so
  is integer arithmetic the exporter writes in float (floor division of indices);
- ``DettoolBatchedNMS`` (scores and boxes in float32, as its spec says) and the standard ops that
  ONNX Runtime has no FP16 kernel for (onnxruntime's default block list: ``NonMaxSuppression``,
  ``RoiAlign``, ``TopK`` ...) plus ``DeformConv`` kept float32;
- values passed between float32 nodes kept float32 (the converter rounds each to fp16 and back),
  and the ``rois`` input of ``DettoolMultiLevelRoIAlign`` and ``DettoolPSRoIAlign`` fed its float32
  source (their features run in FP16, their coordinates must not: fp16 cannot hold pixel
  coordinates past 2048 exactly).
"""
from __future__ import annotations

import ast

import onnx
from onnx import TensorProto

from dettool.trainer.models.postprocess.batched import float32_block_classes

CLASS_KEY = "pkg.torch.onnx.class_hierarchy"
FP32_OPS = ("DettoolBatchedNMS", "DeformConv", "NonMaxSuppression", "RoiAlign", "TopK")
# dettool nodes with FP16 features and float32 RoI coordinates: {op_type: index of the rois input}
FP32_ROIS_INPUT = {"DettoolMultiLevelRoIAlign": 0, "DettoolPSRoIAlign": 1}


def _in_fp32_region(node: onnx.NodeProto, regions: set[str]) -> bool:
    for prop in node.metadata_props:
        if prop.key == CLASS_KEY:
            try:
                classes = ast.literal_eval(prop.value)
            except (ValueError, SyntaxError):
                return False
            return any(c in regions for c in classes)
    return False


def fp32_node_names(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes that belong to a ``Float32Block`` module."""
    regions = float32_block_classes()
    return [n.name for n in model.graph.node if _in_fp32_region(n, regions)]


def _elem_types(model: onnx.ModelProto) -> dict[str, int]:
    """``{tensor: element type}`` of the graph's declared values and initializers."""
    types = {v.name: v.type.tensor_type.elem_type
             for v in [*model.graph.input, *model.graph.value_info, *model.graph.output]}
    types.update({t.name: t.data_type for t in model.graph.initializer})
    return types


_INTEGERS = (TensorProto.INT64, TensorProto.INT32, TensorProto.INT16, TensorProto.INT8, TensorProto.UINT8)


def index_arithmetic_node_names(model: onnx.ModelProto) -> list[str]:
    """Nodes doing integer arithmetic in float: from a ``Cast`` of an integer tensor to float,
    through the float nodes it feeds, to the ``Cast`` back to an integer type. The exporter writes
    integer floor division this way (``Cast``, ``Div``, ``Floor``, ``Cast``), and nodes it adds
    carry no module metadata; in float16 indices past 2048 would round."""
    types = _elem_types(onnx.shape_inference.infer_shapes(model))  # types the exporter left undeclared too
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    todo = [n for n in model.graph.node if _casts_to(n, TensorProto.FLOAT) and types.get(n.input[0]) in _INTEGERS]
    names: set[str] = set()
    while todo:
        node = todo.pop()
        if node.name in names:
            continue
        names.add(node.name)
        if node.op_type == "Cast" and not _casts_to(node, TensorProto.FLOAT):
            continue  # back to an integer (or other) type: the chain ends here
        for out in node.output:
            if types.get(out) in (TensorProto.FLOAT, None):
                todo += consumers.get(out, [])
    return sorted(names)


def _fp32_sources(model: onnx.ModelProto) -> dict[str, str]:
    """``{fp16 tensor: its float32 source}`` for every ``Cast`` to float16 of a float32 tensor."""
    types = _elem_types(model)
    return {n.output[0]: n.input[0] for n in model.graph.node
            if _casts_to(n, TensorProto.FLOAT16) and types.get(n.input[0]) == TensorProto.FLOAT}


def _casts_to(node: onnx.NodeProto, elem_type: int) -> bool:
    return node.op_type == "Cast" and any(a.name == "to" and a.i == elem_type for a in node.attribute)


def _keep_fp32_values_fp32(model: onnx.ModelProto) -> None:
    """Undo the converter's float16 detours of float32 values.

    The converter casts every value leaving a float32 node to float16, and back to float32 for the
    next float32 node: box coordinates, scores and the detections themselves were rounded to fp16
    between the decode, clip, NMS and the graph outputs (0.25 px at 256-512 px, 0.5 px past 512).
    Each ``Cast`` to float32 of such a detour reads the float32 source instead (one feeding a graph
    output becomes an ``Identity``, the output keeps its name), and so does the ``rois`` input of
    ``DettoolMultiLevelRoIAlign`` and ``DettoolPSRoIAlign`` (``FP32_ROIS_INPUT``: their features
    run in FP16, their coordinates must not: fp16 cannot hold pixel coordinates past 2048 exactly).
    Casts left unread are removed.
    """
    sources = _fp32_sources(model)
    graph_outputs = {o.name for o in model.graph.output}
    renamed: dict[str, str] = {}
    for node in model.graph.node:
        if _casts_to(node, TensorProto.FLOAT) and node.input[0] in sources:
            if node.output[0] in graph_outputs:
                node.op_type = "Identity"
                del node.attribute[:]
                node.input[0] = sources[node.input[0]]
            else:
                renamed[node.output[0]] = sources[node.input[0]]
        elif node.op_type in FP32_ROIS_INPUT:
            rois = FP32_ROIS_INPUT[node.op_type]
            node.input[rois] = sources.get(node.input[rois], node.input[rois])
    for node in model.graph.node:
        for i, name in enumerate(node.input):
            while name in renamed:
                name = renamed[name]
            node.input[i] = name
    while True:
        used = {i for n in model.graph.node for i in n.input} | graph_outputs
        dead = [n for n in model.graph.node if n.op_type == "Cast" and n.output[0] not in used]
        if not dead:
            break
        for n in dead:
            model.graph.node.remove(n)
    produced = {o for n in model.graph.node for o in n.output}
    stale = [v for v in model.graph.value_info if v.name not in produced]
    for v in stale:
        model.graph.value_info.remove(v)


def _sort_topologically(graph: onnx.GraphProto) -> None:
    """Reorder ``graph.node`` so every node follows its inputs' producers (the converter appends
    its input casts after their consumers, which ``onnx.checker`` rejects)."""
    available = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            raise ValueError(f"graph has a cycle or a dangling input at node {pending[0].name}")
        for n in ready:
            available.update(n.output)
        ordered += ready
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
    copies = [onnx.NodeProto.FromString(n.SerializeToString()) for n in ordered]
    del graph.node[:]
    graph.node.extend(copies)


def convert_to_fp16(model: onnx.ModelProto) -> onnx.ModelProto:
    """The FP16 version of a dettool FP32 deploy graph (inputs and outputs stay float32)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = convert_float_to_float16(model, keep_io_types=True,
                                     op_block_list=sorted(set(DEFAULT_OP_BLOCK_LIST) | set(FP32_OPS)),
                                     node_block_list=fp32_node_names(model) + index_arithmetic_node_names(model))
    _keep_fp32_values_fp32(model)
    _sort_topologically(model.graph)
    # The converter declares fp16 value_info for float32 initializers read by blocked nodes; the
    # declarations are optional (checkers infer them), so drop those that contradict the data.
    inits = {t.name for t in model.graph.initializer}
    stale = [v for v in model.graph.value_info if v.name in inits]
    for v in stale:
        model.graph.value_info.remove(v)
    return model
