"""dettool.ops: the four custom operators of dettool's deploy graphs (docs/custom_ops.md).

Importing this package registers ``torch.ops.dettool.batched_nms``,
``torch.ops.dettool.multi_level_roi_align``, ``torch.ops.dettool.modulated_deform_conv`` and
``torch.ops.dettool.ps_roi_align``; their reference kernels are built on ``torchvision.ops``; the
RoIAlign ops and deformable convolution are differentiable (fast exact CPU gradients:
``roi_align_grad``, ``deform_conv_grad``; torchvision's backward kernel for the position-sensitive
RoIAlign), so the training model calls the same ops as the deploy graphs. The ONNX nodes
(``exporters/``) and the ONNX Runtime ops (``runtime/``) carry the names below.
"""
from dettool.ops.batched_nms import batched_nms
from dettool.ops.errors import OpInputError, UnsupportedOpError
from dettool.ops.modulated_deform_conv import modulated_deform_conv
from dettool.ops.multi_level_roi_align import map_roi_levels, multi_level_roi_align, rescale_rois
from dettool.ops.ps_roi_align import ps_roi_align

ONNX_DOMAIN = "dettool"
OP_VERSION = 1
ONNX_OP_NAMES = {
    "batched_nms": "DettoolBatchedNMS",
    "multi_level_roi_align": "DettoolMultiLevelRoIAlign",
    "modulated_deform_conv": "DettoolModulatedDeformConv",
    "ps_roi_align": "DettoolPSRoIAlign",
}

__all__ = ["batched_nms", "multi_level_roi_align", "modulated_deform_conv", "ps_roi_align", "map_roi_levels",
           "rescale_rois", "ONNX_DOMAIN", "OP_VERSION", "ONNX_OP_NAMES", "OpInputError", "UnsupportedOpError"]
