"""MMDetection itself as the reference some tests compare dettool with (skipped where it is absent).

``pip install mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0`` installs MMDetection's model code
without mmcv's compiled ops (``mmcv._ext``). :func:`import_mmdet` puts a stand-in module there
before the first import: ``nms`` and ``roi_align_forward`` computed by torchvision.ops (what
inference needs), the deformable convolutions' forwards (``deform_conv2d``) and the masked
convolution's columns (``masked_im2col_forward`` / ``masked_col2im_forward``); any other
compiled op raises if called. Nothing here is part of dettool.
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
import types

import pytest
import torch
import torchvision


class _CompiledOpsStandIn(types.ModuleType):
    """``mmcv._ext`` with the few ops the tests use, on torchvision.ops."""

    def __init__(self) -> None:
        super().__init__("mmcv._ext")
        self.__spec__ = importlib.machinery.ModuleSpec("mmcv._ext", loader=None)

    @staticmethod
    def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float, offset: int = 0) -> torch.Tensor:
        if offset != 0:
            raise NotImplementedError("mmcv._ext stand-in: nms with offset != 0")
        return torchvision.ops.nms(boxes, scores, iou_threshold)

    @staticmethod
    def roi_align_forward(input, rois, output, argmax_y, argmax_x, aligned_height, aligned_width, spatial_scale,
                          sampling_ratio, pool_mode, aligned) -> None:
        if pool_mode != 1:
            raise NotImplementedError("mmcv._ext stand-in: roi_align max pooling")
        output.copy_(torchvision.ops.roi_align(input, rois, (aligned_height, aligned_width), spatial_scale,
                                               sampling_ratio, aligned))

    @staticmethod
    def deform_conv_forward(input, weight, offset, output, columns, ones, kW, kH, dW, dH, padW, padH, dilationW,
                            dilationH, group, deformable_group, im2col_step) -> None:
        output.copy_(torchvision.ops.deform_conv2d(input, offset, weight, stride=(dH, dW), padding=(padH, padW),
                                                   dilation=(dilationH, dilationW)))

    @staticmethod
    def modulated_deform_conv_forward(input, weight, bias, ones, offset, mask, output, columns, kernel_h, kernel_w,
                                      stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, group,
                                      deformable_group, with_bias) -> None:
        output.copy_(torchvision.ops.deform_conv2d(input, offset, weight, bias if with_bias else None,
                                                   stride=(stride_h, stride_w), padding=(pad_h, pad_w),
                                                   dilation=(dilation_h, dilation_w), mask=mask))

    @staticmethod
    def masked_im2col_forward(features, mask_h_idx, mask_w_idx, data_col, kernel_h, kernel_w, pad_h, pad_w) -> None:
        """MaskedConv2d's columns at the masked locations (a stride-1 conv's ``unfold``)."""
        cols = torch.nn.functional.unfold(features, (kernel_h, kernel_w), padding=(pad_h, pad_w))[0]
        data_col.copy_(cols[:, mask_h_idx * features.shape[3] + mask_w_idx])

    @staticmethod
    def masked_col2im_forward(col, mask_h_idx, mask_w_idx, output, height, width, channels) -> None:
        """MaskedConv2d's outputs written back at the masked locations (zero elsewhere)."""
        output[0, :, mask_h_idx, mask_w_idx] = col

    def __getattr__(self, name: str):
        if name.startswith("__"):
            raise AttributeError(name)

        def missing(*args, **kwargs):
            raise NotImplementedError(f"mmcv._ext stand-in has no {name}")

        return missing


def import_mmdet():
    """``mmdet`` with the compiled-ops stand-in in place; the test is skipped without MMDetection."""
    if importlib.util.find_spec("mmdet") is None:
        pytest.skip("MMDetection is not installed (pip install mmdet==3.3.0 mmengine==0.10.7 mmcv-lite==2.1.0)")
    sys.modules.setdefault("mmcv._ext", _CompiledOpsStandIn())
    import mmdet
    import mmdet.models  # noqa: F401  (registers the model classes)

    return mmdet


def without_ssd_predict_bug(model):
    """MMDetection 3.3's ``SSDHead`` cannot predict: its shared decoding reads ``self.loss_cls``,
    which ``SSDHead`` never sets (open-mmlab/mmdetection#11780, #11063, #11305; fix proposed in
    #11524, unmerged). Setting it to None on every SSD head of ``model`` gives the decoding its
    softmax branch, which is what the fix does."""
    from mmdet.models.dense_heads import SSDHead

    for module in model.modules():
        if isinstance(module, SSDHead) and "loss_cls" not in module.__dict__ and "loss_cls" not in module._modules:
            module.loss_cls = None
    return model
