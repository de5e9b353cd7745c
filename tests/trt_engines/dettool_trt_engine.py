"""One-node ONNX graphs of the dettool operators, and building / running them as TensorRT engines.

The graphs are what ``dettool export --to onnx`` writes for each operator (domain ``dettool``,
attributes per docs/custom_ops.md, plus ``plugin_namespace`` / ``plugin_version`` for TensorRT's
parser). ``tensorrt`` is imported only by the engine functions, so the graphs can be checked
without it.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import onnx
import torch
from onnx import TensorProto, helper, numpy_helper

PLUGIN_ATTRIBUTES = {"plugin_namespace": "dettool", "plugin_version": "1"}
_ONNX_TYPES = {torch.float32: TensorProto.FLOAT, torch.float16: TensorProto.FLOAT16, torch.int32: TensorProto.INT32}


@dataclass
class OnnxTensor:
    """A graph input or output: name, type and shape (strings are dynamic dimensions)."""

    name: str
    dtype: torch.dtype
    shape: list[int | str]


@dataclass
class OneNodeGraph:
    op_type: str
    inputs: list[OnnxTensor]
    outputs: list[OnnxTensor]
    attributes: dict
    initializers: dict[str, torch.Tensor] = field(default_factory=dict)

    def to_onnx(self) -> onnx.ModelProto:
        node = helper.make_node(self.op_type, [t.name for t in self.inputs] + list(self.initializers),
                                [t.name for t in self.outputs], name=f"{self.op_type}_0", domain="dettool",
                                **self.attributes, **PLUGIN_ATTRIBUTES)
        graph = helper.make_graph(
            [node], f"{self.op_type}_graph",
            [helper.make_tensor_value_info(t.name, _ONNX_TYPES[t.dtype], t.shape) for t in self.inputs],
            [helper.make_tensor_value_info(t.name, _ONNX_TYPES[t.dtype], t.shape) for t in self.outputs],
            initializer=[numpy_helper.from_array(v.cpu().numpy(), name=k) for k, v in self.initializers.items()])
        return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("dettool", 1)],
                                 producer_name="dettool-tests")


def batched_nms_graph(num_classes: int, per_class_boxes: bool, score_threshold: float, iou_threshold: float,
                      max_output_boxes: int) -> OneNodeGraph:
    box_shape = ["B", "N", num_classes, 4] if per_class_boxes else ["B", "N", 4]
    k = max_output_boxes
    return OneNodeGraph(
        "DettoolBatchedNMS",
        [OnnxTensor("boxes", torch.float32, box_shape), OnnxTensor("scores", torch.float32, ["B", "N", num_classes])],
        [OnnxTensor("num_dets", torch.int32, ["B"]), OnnxTensor("det_boxes", torch.float32, ["B", k, 4]),
         OnnxTensor("det_scores", torch.float32, ["B", k]), OnnxTensor("det_classes", torch.int32, ["B", k])],
        dict(score_threshold=float(score_threshold), iou_threshold=float(iou_threshold),
             max_output_boxes=int(max_output_boxes)))


def multi_level_roi_align_graph(dtype: torch.dtype, channels: int, level_sizes: list[tuple[int, int]],
                                featmap_strides: list[int], output_size: tuple[int, int], sampling_ratio: int,
                                finest_scale: int, aligned: bool) -> OneNodeGraph:
    feats = [OnnxTensor(f"feat_{i}", dtype, ["B", channels, h, w]) for i, (h, w) in enumerate(level_sizes)]
    return OneNodeGraph(
        "DettoolMultiLevelRoIAlign",
        [OnnxTensor("rois", torch.float32, ["R", 5])] + feats,
        [OnnxTensor("roi_feats", dtype, ["R", channels, *output_size])],
        dict(output_height=output_size[0], output_width=output_size[1], featmap_strides=list(featmap_strides),
             sampling_ratio=sampling_ratio, finest_scale=finest_scale, aligned=int(aligned)))


def modulated_deform_conv_graph(weight: torch.Tensor, bias: torch.Tensor, in_size: tuple[int, int],
                                out_size: tuple[int, int], stride, padding, dilation, groups: int,
                                deform_groups: int) -> OneNodeGraph:
    dtype = weight.dtype
    co, cg, kh, kw = weight.shape
    taps = deform_groups * kh * kw
    return OneNodeGraph(
        "DettoolModulatedDeformConv",
        [OnnxTensor("input", dtype, ["B", cg * groups, *in_size]),
         OnnxTensor("offset", dtype, ["B", 2 * taps, *out_size]),
         OnnxTensor("mask", dtype, ["B", taps, *out_size])],
        [OnnxTensor("output", dtype, ["B", co, *out_size])],
        dict(stride=list(stride), padding=list(padding), dilation=list(dilation), groups=groups,
             deform_groups=deform_groups),
        initializers={"weight": weight, "bias": bias})


def ps_roi_align_graph(dtype: torch.dtype, channels: int, output_size: int, spatial_scale: float,
                       sampling_ratio: int) -> OneNodeGraph:
    """``features [B, channels * k * k, H, W]``, ``rois [R, 5]`` -> ``[R, channels, k, k]``."""
    k = output_size
    return OneNodeGraph(
        "DettoolPSRoIAlign",
        [OnnxTensor("features", dtype, ["B", channels * k * k, "H", "W"]), OnnxTensor("rois", torch.float32, ["R", 5])],
        [OnnxTensor("pooled", dtype, ["R", channels, k, k])],
        dict(output_size=k, spatial_scale=float(spatial_scale), sampling_ratio=sampling_ratio))


# --------------------------------------------------------------------------------------------
# TensorRT
# --------------------------------------------------------------------------------------------

def build_engine(model: onnx.ModelProto, profile: dict[str, tuple[tuple, tuple, tuple]]):
    """Parse, build and deserialize an engine (strongly typed where TensorRT offers it, so float16
    graph inputs run the plugin in float16).

    Args:
        profile: input name -> (min, opt, max) shapes of its dynamic dimensions' profile.

    Returns: ``(engine, serialized plan bytes)``.
    """
    import tensorrt as trt

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0  # TensorRT 11: every network is strongly typed, the flag deprecated and ignored
    if int(trt.__version__.split(".")[0]) < 11:
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(model.SerializeToString()):
        errors = "\n".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"ONNX parse failed:\n{errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, 1 << 30)
    opt_profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in profile.items():
        opt_profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(opt_profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("engine build failed")
    plan = bytes(plan)
    return deserialize_engine(plan), plan


_RUNTIMES: list = []


def deserialize_engine(plan: bytes):
    import tensorrt as trt

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    if engine is None:
        raise RuntimeError("engine deserialization failed")
    _RUNTIMES.append(runtime)  # the runtime must outlive its engines
    return engine


def run_engine(engine, feeds: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Run an engine on CUDA tensors; returns every output, on the GPU."""
    import tensorrt as trt

    dtypes = {trt.float32: torch.float32, trt.float16: torch.float16, trt.int32: torch.int32}
    context = engine.create_execution_context()
    stream = torch.cuda.current_stream()
    placeholder = torch.empty(16, device="cuda")  # a valid address for tensors without elements
    keep = [placeholder]
    outputs = {}

    def address(t: torch.Tensor) -> int:
        return t.data_ptr() if t.numel() else placeholder.data_ptr()

    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
            tensor = feeds[name].cuda().contiguous()
            keep.append(tensor)
            context.set_input_shape(name, tuple(tensor.shape))
            context.set_tensor_address(name, address(tensor))
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        if engine.get_tensor_mode(name) == trt.TensorIOMode.OUTPUT:
            shape = tuple(context.get_tensor_shape(name))
            out = torch.full(shape, -7, dtype=dtypes[engine.get_tensor_dtype(name)], device="cuda")
            outputs[name] = out
            context.set_tensor_address(name, address(out))
    if not context.execute_async_v3(stream.cuda_stream):
        raise RuntimeError("enqueue failed")
    stream.synchronize()
    return outputs

