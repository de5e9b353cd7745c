"""dettool.ops: the three custom operators of dettool's deploy graphs (docs/custom_ops.md).

Importing this package registers ``torch.ops.dettool.batched_nms``,
``torch.ops.dettool.multi_level_roi_align`` and ``torch.ops.dettool.modulated_deform_conv``;
their reference kernels are built on ``torchvision.ops``; RoIAlign and deformable convolution are
differentiable (fast exact CPU gradients: ``roi_align_grad``, ``deform_conv_grad``), so the
training model calls the same ops as the deploy graphs. The ONNX nodes (``exporters/``) and the
ONNX Runtime ops (``runtime/``) carry the names below.
"""
from dettool.ops.batched_nms import batched_nms
from dettool.ops.errors import OpInputError, UnsupportedOpError
from dettool.ops.modulated_deform_conv import modulated_deform_conv
from dettool.ops.multi_level_roi_align import map_roi_levels, multi_level_roi_align, rescale_rois

ONNX_DOMAIN = "dettool"
OP_VERSION = 1
ONNX_OP_NAMES = {
    "batched_nms": "DettoolBatchedNMS",
    "multi_level_roi_align": "DettoolMultiLevelRoIAlign",
    "modulated_deform_conv": "DettoolModulatedDeformConv",
}

__all__ = ["batched_nms", "multi_level_roi_align", "modulated_deform_conv", "map_roi_levels", "rescale_rois",
           "ONNX_DOMAIN", "OP_VERSION", "ONNX_OP_NAMES", "OpInputError", "UnsupportedOpError"]
