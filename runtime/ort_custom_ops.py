"""Run ``dettool``-domain ONNX nodes in ONNX Runtime (CPU) as onnxruntime-extensions Python ops.

The Python ops call the reference kernels of ``dettool.ops`` (numpy <-> torch), so ONNX Runtime
computes exactly what the PyTorch model computes. onnxruntime-extensions gives each op_type one
fixed input/output type signature and knows int64, float and string attributes only, so
:func:`make_session` adapts an in-memory copy of the model (the file on disk is never changed):

- each dettool node becomes a node of domain ``ai.onnx.contrib`` whose op_type names its
  signature: ``DettoolBatchedNMS``, ``DettoolModulatedDeformConv``, ``DettoolPSRoIAlign`` and
  ``DettoolMultiLevelRoIAlign_L<number of feature levels>`` (1 to ``MAX_FEATURE_LEVELS``), all on
  float32 tensors;
- the Python-op API has no float16 (registering it aborts the process), so float16 inputs are
  cast to float32 in the graph and float16 outputs cast back. That is exactly what the references
  do with float16 inputs (compute in float32, round the result to float16);
- list attributes travel as comma-separated strings (``featmap_strides="4,8,16,32"``), the
  TensorRT-only ``plugin_namespace`` / ``plugin_version`` are dropped, and optional attributes a
  node omits (``roi_scale_factor``) are written with their default.

Portable models (standard ONNX only) are passed through unchanged.

Two hazards of onnxruntime-extensions 0.15 (both measured) shape this module:

- its Python ops live in a growing array that every session created with its library points
  into: registering one more op after a session exists can crash that session (segmentation
  fault on its next run or on its destruction). All variants are therefore registered together,
  once, before the first session (:func:`register_python_ops`), and nothing is registered later;
  no other code of the process may register onnxruntime-extensions Python ops after that;
- an exception escaping a Python op aborts the whole process (rethrown across C++), so the ops
  catch it, return empty outputs and leave it for :meth:`DettoolSession.run`, which raises it
  once ONNX Runtime returns.

Cost: onnxruntime-extensions hands a Python op's outputs back through ``ndarray.tolist()``,
about 0.7 s for a 4.7M-element output (e.g. 1000 RoIs x 256 x 7 x 7 from RoIAlign); fine for
checking a deploy graph, not a fast path (that is TensorRT's job).
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime_extensions import PyCustomOpDef, get_library_path, onnx_op

from dettool.exporters.onnx_schemas import register_dettool_schemas
from dettool.ops import (
    ONNX_DOMAIN,
    ONNX_OP_NAMES,
    UnsupportedOpError,
    batched_nms,
    modulated_deform_conv,
    multi_level_roi_align,
    ps_roi_align,
)

CONTRIB_DOMAIN = "ai.onnx.contrib"
MAX_FEATURE_LEVELS = 8  # DettoolMultiLevelRoIAlign_L1 ... _L8 are registered
DROPPED_ATTRIBUTES = ("plugin_namespace", "plugin_version")

_PYOP_TYPES = {onnx.TensorProto.FLOAT: PyCustomOpDef.dt_float, onnx.TensorProto.INT32: PyCustomOpDef.dt_int32}
_FLOAT_TYPES = (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16)


@dataclass(frozen=True)
class _OpAdapter:
    """How one dettool op runs as a Python op.

    Attributes:
        attributes: name -> onnxruntime-extensions attribute type (lists as ``dt_string``).
        num_inputs: inputs of the Python op (RoIAlign: 1 + the number of feature levels).
        output_types: ONNX element types of the Python op's outputs (its inputs are float32).
        typed_like: index of the input whose type the float outputs take in the ONNX node (the
            features), or None when they are float32 always.
        kernel: ``(*numpy inputs, **attributes) -> numpy output or tuple of outputs``.
        defaults: optional attributes (name -> default), written into a node that omits them
            (the Python op is only handed the attributes its node carries).
    """

    attributes: dict[str, int]
    num_inputs: int
    output_types: list[int]
    typed_like: int | None
    kernel: Callable
    defaults: dict[str, float | int | str] = field(default_factory=dict)


def _tensor(x: np.ndarray) -> torch.Tensor:
    """A torch view of an input array (a copy when onnxruntime hands out read-only memory)."""
    return torch.from_numpy(x if x.flags.writeable else x.copy())


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")] if text else []


def _batched_nms_kernel(boxes: np.ndarray, scores: np.ndarray, score_threshold: float, iou_threshold: float,
                        max_output_boxes: int) -> tuple[np.ndarray, ...]:
    outputs = batched_nms(_tensor(boxes), _tensor(scores), score_threshold, iou_threshold, max_output_boxes)
    return tuple(t.numpy() for t in outputs)


def _multi_level_roi_align_kernel(rois: np.ndarray, *feats: np.ndarray, output_height: int, output_width: int,
                                  featmap_strides: str, sampling_ratio: int, finest_scale: int,
                                  aligned: int, roi_scale_factor: float) -> np.ndarray:
    out = multi_level_roi_align(_tensor(rois), [_tensor(f) for f in feats], output_height, output_width,
                                _ints(featmap_strides), sampling_ratio, finest_scale, bool(aligned), roi_scale_factor)
    return out.numpy()


def _modulated_deform_conv_kernel(input: np.ndarray, offset: np.ndarray, mask: np.ndarray, weight: np.ndarray,
                                  bias: np.ndarray, stride: str, padding: str, dilation: str, groups: int,
                                  deform_groups: int) -> np.ndarray:
    out = modulated_deform_conv(_tensor(input), _tensor(offset), _tensor(mask), _tensor(weight), _tensor(bias),
                                _ints(stride), _ints(padding), _ints(dilation), groups, deform_groups)
    return out.numpy()


def _ps_roi_align_kernel(features: np.ndarray, rois: np.ndarray, output_size: int, spatial_scale: float,
                         sampling_ratio: int) -> np.ndarray:
    return ps_roi_align(_tensor(features), _tensor(rois), output_size, spatial_scale, sampling_ratio).numpy()


_INT, _FLOAT, _STRING = PyCustomOpDef.dt_int64, PyCustomOpDef.dt_float, PyCustomOpDef.dt_string
ADAPTERS: dict[str, _OpAdapter] = {
    ONNX_OP_NAMES["batched_nms"]: _OpAdapter(
        {"score_threshold": _FLOAT, "iou_threshold": _FLOAT, "max_output_boxes": _INT}, 2,
        [onnx.TensorProto.INT32, onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT, onnx.TensorProto.INT32], None,
        _batched_nms_kernel),
    ONNX_OP_NAMES["multi_level_roi_align"]: _OpAdapter(
        {"output_height": _INT, "output_width": _INT, "featmap_strides": _STRING, "sampling_ratio": _INT,
         "finest_scale": _INT, "aligned": _INT, "roi_scale_factor": _FLOAT}, 1 + MAX_FEATURE_LEVELS,
        [onnx.TensorProto.FLOAT], 1,
        _multi_level_roi_align_kernel, defaults={"roi_scale_factor": 1.0}),
    ONNX_OP_NAMES["modulated_deform_conv"]: _OpAdapter(
        {"stride": _STRING, "padding": _STRING, "dilation": _STRING, "groups": _INT, "deform_groups": _INT}, 5,
        [onnx.TensorProto.FLOAT], 0,
        _modulated_deform_conv_kernel),
    ONNX_OP_NAMES["ps_roi_align"]: _OpAdapter(
        {"output_size": _INT, "spatial_scale": _FLOAT, "sampling_ratio": _INT}, 2, [onnx.TensorProto.FLOAT], 0,
        _ps_roi_align_kernel),
}

_registered = False
_pending_errors: list[BaseException] = []
_pending_lock = threading.Lock()


def _guarded(kernel: Callable, output_types: list[int]) -> Callable:
    """``kernel`` that records its exception and returns empty outputs instead of raising."""
    dtypes = [onnx.helper.tensor_dtype_to_np_dtype(t) for t in output_types]

    def run(*inputs, **attributes):
        try:
            return kernel(*inputs, **attributes)
        except Exception as error:  # noqa: BLE001  (re-raised by DettoolSession.run)
            with _pending_lock:
                _pending_errors.append(error)
            empty = tuple(np.zeros((0,), dtype) for dtype in dtypes)
            return empty if len(empty) > 1 else empty[0]

    return run


def _take_error() -> BaseException | None:
    with _pending_lock:
        error = _pending_errors[0] if _pending_errors else None
        _pending_errors.clear()
    return error


def _python_op_type(op_type: str, num_inputs: int) -> str:
    """``DettoolMultiLevelRoIAlign_L4`` for four feature levels; the ONNX op_type for the other ops."""
    if op_type == ONNX_OP_NAMES["multi_level_roi_align"]:
        return f"{op_type}_L{num_inputs - 1}"
    return op_type


def register_python_ops() -> None:
    """Register every Python-op variant with onnxruntime-extensions, once (see the module docstring)."""
    global _registered
    if _registered:
        return
    for op_type, adapter in ADAPTERS.items():
        roi_align = op_type == ONNX_OP_NAMES["multi_level_roi_align"]
        for num_inputs in range(2, adapter.num_inputs + 1) if roi_align else [adapter.num_inputs]:
            onnx_op(op_type=_python_op_type(op_type, num_inputs), inputs=[PyCustomOpDef.dt_float] * num_inputs,
                    outputs=[_PYOP_TYPES[t] for t in adapter.output_types],
                    attrs=adapter.attributes)(_guarded(adapter.kernel, adapter.output_types))
    _registered = True


def _value_types(model: onnx.ModelProto) -> dict[str, int]:
    """ONNX element type of every typed value of the main graph."""
    graph = model.graph
    types = {init.name: init.data_type for init in graph.initializer}
    for info in [*graph.input, *graph.value_info, *graph.output]:
        if info.type.HasField("tensor_type"):
            types[info.name] = info.type.tensor_type.elem_type
    return types


def _attribute_value(node: onnx.NodeProto, attr: onnx.AttributeProto) -> onnx.AttributeProto:
    """The attribute as onnxruntime-extensions reads it: int, float or string (lists joined by commas)."""
    value = onnx.helper.get_attribute_value(attr)
    if attr.type == onnx.AttributeProto.INTS:
        value = ",".join(str(v) for v in value)
    elif attr.type not in (onnx.AttributeProto.INT, onnx.AttributeProto.FLOAT, onnx.AttributeProto.STRING):
        raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: attribute {attr.name!r} of type "
                                 f"{onnx.AttributeProto.AttributeType.Name(attr.type)} is not supported")
    return onnx.helper.make_attribute(attr.name, value)


def _check_node(node: onnx.NodeProto, input_types: tuple[int, ...]) -> None:
    if node.op_type not in ADAPTERS:
        raise UnsupportedOpError(f"ONNX Runtime cannot run {ONNX_DOMAIN}::{node.op_type} (node {node.name!r}); "
                                 f"known: {', '.join(ADAPTERS)}")
    if node.op_type == ONNX_OP_NAMES["multi_level_roi_align"] and not 2 <= len(node.input) <= 1 + MAX_FEATURE_LEVELS:
        raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: {len(node.input) - 1} feature levels; "
                                 f"ONNX Runtime runs 1 to {MAX_FEATURE_LEVELS}")
    for name, elem_type in zip(node.input, input_types):
        if elem_type not in _FLOAT_TYPES:
            type_name = onnx.TensorProto.DataType.Name(elem_type)
            raise UnsupportedOpError(f"{node.op_type} node {node.name!r}: input {name!r} is {type_name}; "
                                     f"float32 or float16 expected")


def _python_op_nodes(node: onnx.NodeProto, types: dict[str, int]) -> list[onnx.NodeProto]:
    """The Python-op node replacing dettool node ``node``, with the Casts its float16 values need."""
    input_types = tuple(types.get(name, onnx.TensorProto.UNDEFINED) for name in node.input)
    _check_node(node, input_types)
    prefix = node.name or node.output[0]
    before, after, inputs, outputs = [], [], [], []
    for i, (name, elem_type) in enumerate(zip(node.input, input_types)):
        if elem_type == onnx.TensorProto.FLOAT16:
            before.append(onnx.helper.make_node("Cast", [name], [f"{prefix}/input{i}_float32"],
                                                to=onnx.TensorProto.FLOAT))
            name = f"{prefix}/input{i}_float32"
        inputs.append(name)
    adapter = ADAPTERS[node.op_type]
    float16_outputs = adapter.typed_like is not None and input_types[adapter.typed_like] == onnx.TensorProto.FLOAT16
    for name, elem_type in zip(node.output, adapter.output_types):
        if float16_outputs and elem_type == onnx.TensorProto.FLOAT:
            after.append(onnx.helper.make_node("Cast", [f"{prefix}/{name}_float32"], [name],
                                               to=onnx.TensorProto.FLOAT16))
            name = f"{prefix}/{name}_float32"
        outputs.append(name)
    attributes = [_attribute_value(node, a) for a in node.attribute if a.name not in DROPPED_ATTRIBUTES]
    given = {a.name for a in attributes}
    attributes += [onnx.helper.make_attribute(name, value) for name, value in adapter.defaults.items()
                   if name not in given]
    python_op = onnx.helper.make_node(_python_op_type(node.op_type, len(inputs)), inputs, outputs, name=node.name,
                                      domain=CONTRIB_DOMAIN)
    python_op.attribute.extend(attributes)
    return [*before, python_op, *after]


def adapt_model(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose dettool nodes are onnxruntime-extensions Python ops.

    Args:
        model: an exported dettool graph (custom-op or portable flavour, FP32 or FP16).

    Returns: the adapted copy; ``model`` itself is unchanged. Portable models come back as they are.
    """
    dettool_nodes = [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
    if not dettool_nodes:
        return model
    types = _value_types(model)
    if any(name not in types for node in dettool_nodes for name in node.input if name):
        register_dettool_schemas()  # shape inference types the dettool nodes' outputs
        types = _value_types(onnx.shape_inference.infer_shapes(model))
    adapted = onnx.ModelProto()
    adapted.CopyFrom(model)
    nodes = []
    for node in adapted.graph.node:
        nodes += _python_op_nodes(node, types) if node.domain == ONNX_DOMAIN else [node]
    del adapted.graph.node[:]
    adapted.graph.node.extend(nodes)
    opsets = [o for o in adapted.opset_import if o.domain not in (ONNX_DOMAIN, CONTRIB_DOMAIN)]
    del adapted.opset_import[:]
    adapted.opset_import.extend([*opsets, onnx.helper.make_opsetid(CONTRIB_DOMAIN, 1)])
    return adapted


class DettoolSession(ort.InferenceSession):
    """An ``InferenceSession`` whose ``run`` raises what a dettool Python op raised."""

    def run(self, output_names, input_feed, run_options=None):
        _take_error()
        try:
            outputs = super().run(output_names, input_feed, run_options)
        except Exception as ort_error:
            error = _take_error()
            if error is not None:
                raise error from ort_error
            raise
        error = _take_error()
        if error is not None:
            raise error
        return outputs


def make_session(model: str | Path | onnx.ModelProto, providers: list[str] | None = None,
                 threads: int | None = None, spin: bool = True) -> ort.InferenceSession:
    """An ONNX Runtime session for a dettool deploy graph, custom-op or portable, FP32 or FP16.

    Args:
        model: path of an ``.onnx`` file or a loaded model (never modified).
        providers: ONNX Runtime execution providers; default CPU. The dettool Python ops always
            run on the CPU.

        threads: intra-op threads; default as many as torch (``torch.get_num_threads()``, e.g.
            from ``OMP_NUM_THREADS``), so that both run on the same cores when they are compared.
        spin: let the intra-op threads spin-wait for the next run (ONNX Runtime's default: the
            lowest latency when runs follow each other). ``False`` suits a caller that does other
            CPU work between runs (``Detector``'s pre-processing): spinning threads would take its cores.

    Returns: a :class:`DettoolSession` (an ``onnxruntime.InferenceSession``).
    """
    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model))
    adapted = adapt_model(model)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if not spin:
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if adapted is not model:
        register_python_ops()
        options.register_custom_ops_library(get_library_path())
    return DettoolSession(adapted.SerializeToString(), options, providers=providers or ["CPUExecutionProvider"])
