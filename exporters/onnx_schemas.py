"""ONNX ``OpSchema``s of the four ``dettool``-domain nodes (docs/custom_ops.md), version 1.

Registering them lets onnxscript build the nodes (``Opset("dettool", 1).DettoolBatchedNMS``),
``onnx.checker.check_model(full_check=True)`` check them, and ONNX shape inference type their
outputs. ``register_dettool_schemas`` is idempotent; the exporters call it before they build a graph.
"""
from __future__ import annotations

import onnx
from onnx import TensorProto
from onnx.defs import OpSchema

from dettool.ops import ONNX_DOMAIN, ONNX_OP_NAMES, OP_VERSION

_FLOAT_TYPES = ["tensor(float)", "tensor(float16)"]
_PLUGIN_ATTRIBUTES = [
    OpSchema.Attribute("plugin_namespace", OpSchema.AttrType.STRING, "TensorRT plugin namespace, 'dettool'",
                       required=False),
    OpSchema.Attribute("plugin_version", OpSchema.AttrType.STRING, "TensorRT plugin version, '1'", required=False),
]


def _dim(type_proto: TensorProto, axis: int) -> onnx.TensorShapeProto.Dimension | None:
    """Dimension ``axis`` of a tensor type, or None when the rank is unknown."""
    tensor_type = type_proto.tensor_type
    if not tensor_type.HasField("shape") or axis >= len(tensor_type.shape.dim):
        return None
    return tensor_type.shape.dim[axis]


def _set_output(ctx, index: int, elem_type: int, dims: list) -> None:
    """Output ``index`` gets ``elem_type`` and ``dims`` (ints, Dimension protos or None = unknown)."""
    out = onnx.TypeProto()
    out.tensor_type.elem_type = elem_type
    shape = out.tensor_type.shape
    for d in dims:
        dim = shape.dim.add()
        if isinstance(d, int):
            dim.dim_value = d
        elif d is not None:
            dim.CopyFrom(d)
    ctx.set_output_type(index, out)


def _attr_int(ctx, name: str) -> int | None:
    attr = ctx.get_attribute(name)
    return None if attr is None else attr.i


def _infer_batched_nms(ctx) -> None:
    scores = ctx.get_input_type(1)
    batch, k = _dim(scores, 0), _attr_int(ctx, "max_output_boxes")
    _set_output(ctx, 0, TensorProto.INT32, [batch])
    _set_output(ctx, 1, TensorProto.FLOAT, [batch, k, 4])
    _set_output(ctx, 2, TensorProto.FLOAT, [batch, k])
    _set_output(ctx, 3, TensorProto.INT32, [batch, k])


def _infer_roi_align(ctx) -> None:
    rois, feat = ctx.get_input_type(0), ctx.get_input_type(1)
    _set_output(ctx, 0, feat.tensor_type.elem_type,
                [_dim(rois, 0), _dim(feat, 1), _attr_int(ctx, "output_height"), _attr_int(ctx, "output_width")])


def _infer_deform_conv(ctx) -> None:
    x, offset, weight = ctx.get_input_type(0), ctx.get_input_type(1), ctx.get_input_type(3)
    _set_output(ctx, 0, x.tensor_type.elem_type, [_dim(x, 0), _dim(weight, 0), _dim(offset, 2), _dim(offset, 3)])


def _infer_ps_roi_align(ctx) -> None:
    features, rois = ctx.get_input_type(0), ctx.get_input_type(1)
    k = _attr_int(ctx, "output_size")
    channels = _dim(features, 1)
    known = channels is not None and channels.HasField("dim_value") and k
    _set_output(ctx, 0, features.tensor_type.elem_type,
                [_dim(rois, 0), channels.dim_value // (k * k) if known else None, k, k])


def _param(name: str, type_str: str, doc: str,
           option: OpSchema.FormalParameterOption = OpSchema.FormalParameterOption.Single) -> OpSchema.FormalParameter:
    return OpSchema.FormalParameter(name, type_str, doc, param_option=option)


def batched_nms_schema() -> OpSchema:
    attr = OpSchema.Attribute
    schema = OpSchema(
        ONNX_OP_NAMES["batched_nms"], ONNX_DOMAIN, OP_VERSION,
        "Multi-class NMS with fixed-size padded outputs (dettool docs/custom_ops.md).",
        inputs=[_param("boxes", "tensor(float)", "[B, N, 4] or [B, N, C, 4] xyxy"),
                _param("scores", "tensor(float)", "[B, N, C]")],
        outputs=[_param("num_dets", "tensor(int32)", "[B]"),
                 _param("det_boxes", "tensor(float)", "[B, K, 4], rows >= num_dets are 0"),
                 _param("det_scores", "tensor(float)", "[B, K], rows >= num_dets are 0"),
                 _param("det_classes", "tensor(int32)", "[B, K], rows >= num_dets are -1")],
        attributes=[attr("score_threshold", OpSchema.AttrType.FLOAT, "strict score threshold"),
                    attr("iou_threshold", OpSchema.AttrType.FLOAT, "suppression IoU (strict >)"),
                    attr("max_output_boxes", OpSchema.AttrType.INT, "K, detections per image"),
                    *_PLUGIN_ATTRIBUTES],
    )
    return schema.set_type_and_shape_inference_function(_infer_batched_nms)


def multi_level_roi_align_schema() -> OpSchema:
    attr = OpSchema.Attribute
    schema = OpSchema(
        ONNX_OP_NAMES["multi_level_roi_align"], ONNX_DOMAIN, OP_VERSION,
        "RoIAlign of each RoI on the FPN level its scale maps to (dettool docs/custom_ops.md).",
        inputs=[_param("rois", "tensor(float)", "[R, 5] (batch_index, x1, y1, x2, y2)"),
                _param("feats", "T", "L levels [B, C, H_l, W_l], finest first",
                       OpSchema.FormalParameterOption.Variadic)],
        outputs=[_param("pooled", "T", "[R, C, output_height, output_width]")],
        type_constraints=[("T", _FLOAT_TYPES, "feature type")],
        attributes=[attr("output_height", OpSchema.AttrType.INT, "pooled height"),
                    attr("output_width", OpSchema.AttrType.INT, "pooled width"),
                    attr("featmap_strides", OpSchema.AttrType.INTS, "stride of each level"),
                    attr("sampling_ratio", OpSchema.AttrType.INT, "points per bin side, 0 = adaptive"),
                    attr("finest_scale", OpSchema.AttrType.INT, "56 in MMDetection"),
                    attr("aligned", OpSchema.AttrType.INT, "1: pixel-shifted RoIAlign"),
                    # Optional without a schema default: onnxscript would write a default into every
                    # node, and nodes without rescaling are to stay those of before the attribute.
                    attr("roi_scale_factor", OpSchema.AttrType.FLOAT,
                         "RoIs are scaled about their centres after the level mapping; absent = 1 (not)",
                         required=False),
                    *_PLUGIN_ATTRIBUTES],
    )
    return schema.set_type_and_shape_inference_function(_infer_roi_align)


def modulated_deform_conv_schema() -> OpSchema:
    attr = OpSchema.Attribute
    schema = OpSchema(
        ONNX_OP_NAMES["modulated_deform_conv"], ONNX_DOMAIN, OP_VERSION,
        "Modulated deformable convolution, DCNv2 (dettool docs/custom_ops.md).",
        inputs=[_param("input", "T", "[B, C, H, W]"),
                _param("offset", "T", "[B, 2 * G * kh * kw, Ho, Wo]"),
                _param("mask", "T", "[B, G * kh * kw, Ho, Wo]"),
                _param("weight", "T", "[Co, C / groups, kh, kw]"),
                _param("bias", "T", "[Co]")],
        outputs=[_param("output", "T", "[B, Co, Ho, Wo]")],
        type_constraints=[("T", _FLOAT_TYPES, "tensor type")],
        attributes=[attr("stride", OpSchema.AttrType.INTS, "(height, width)"),
                    attr("padding", OpSchema.AttrType.INTS, "(height, width)"),
                    attr("dilation", OpSchema.AttrType.INTS, "(height, width)"),
                    attr("groups", OpSchema.AttrType.INT, "convolution groups"),
                    attr("deform_groups", OpSchema.AttrType.INT, "offset groups"),
                    *_PLUGIN_ATTRIBUTES],
    )
    return schema.set_type_and_shape_inference_function(_infer_deform_conv)


def ps_roi_align_schema() -> OpSchema:
    attr = OpSchema.Attribute
    schema = OpSchema(
        ONNX_OP_NAMES["ps_roi_align"], ONNX_DOMAIN, OP_VERSION,
        "Position-sensitive RoIAlign of R-FCN, torchvision.ops.ps_roi_align (dettool docs/custom_ops.md).",
        inputs=[_param("features", "T", "[B, C * k * k, H, W]; bin (ph, pw) of channel c reads (c * k + ph) * k + pw"),
                _param("rois", "tensor(float)", "[R, 5] (batch_index, x1, y1, x2, y2)")],
        outputs=[_param("pooled", "T", "[R, C, k, k]")],
        type_constraints=[("T", _FLOAT_TYPES, "feature type")],
        attributes=[attr("output_size", OpSchema.AttrType.INT, "k, pooled height and width"),
                    attr("spatial_scale", OpSchema.AttrType.FLOAT, "feature pixels per input pixel, 1 / stride"),
                    attr("sampling_ratio", OpSchema.AttrType.INT, "points per bin side, 0 = adaptive"),
                    *_PLUGIN_ATTRIBUTES],
    )
    return schema.set_type_and_shape_inference_function(_infer_ps_roi_align)


def register_dettool_schemas() -> None:
    """Register the four schemas with ``onnx.defs`` unless they are registered already."""
    for make_schema in (batched_nms_schema, multi_level_roi_align_schema, modulated_deform_conv_schema,
                        ps_roi_align_schema):
        schema = make_schema()
        if not onnx.defs.has(schema.name, schema.domain):
            onnx.defs.register_schema(schema)
