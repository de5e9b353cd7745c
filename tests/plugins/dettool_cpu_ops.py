"""ctypes bindings of ``libdettool_cpu_ops.so`` (plugins_trt/common/cpu_ops_api.h) on torch tensors.

The library holds the plugins' CPU implementations, which share their per-element math with the
CUDA kernels; these wrappers take and return tensors shaped as docs/custom_ops.md states.
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import torch

_DTYPE_CODES = {torch.float32: 0, torch.float16: 1}

_i32, _f32, _i64 = ctypes.c_int32, ctypes.c_float, ctypes.c_int64
_ptr = ctypes.c_void_p


def _p(t: torch.Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _dtype_code(t: torch.Tensor) -> int:
    if t.dtype not in _DTYPE_CODES:
        raise TypeError(f"float32 or float16 expected, got {t.dtype}")
    return _DTYPE_CODES[t.dtype]


class CpuOps:
    """The four dettool operators (and the float16 conversions) of one loaded library.

    Args:
        path: ``libdettool_cpu_ops.so``.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        lib = ctypes.CDLL(str(self.path))
        lib.dettool_cpu_last_error.restype = ctypes.c_char_p
        lib.dettool_cpu_batched_nms.argtypes = [_ptr, _ptr, _i32, _i32, _i32, _i32, _f32, _f32, _i32,
                                                _ptr, _ptr, _ptr, _ptr]
        lib.dettool_cpu_batched_nms.restype = _i32
        lib.dettool_cpu_multi_level_roi_align.argtypes = [_i32, _ptr, _i32, _ptr, _ptr, _ptr, _ptr, _i32, _i32,
                                                          _i32, _i32, _i32, _i32, _i32, _i32, _f32, _ptr]
        lib.dettool_cpu_multi_level_roi_align.restype = _i32
        lib.dettool_cpu_modulated_deform_conv.argtypes = [_i32] + [_ptr] * 5 + [_i32] * 15 + [_ptr]
        lib.dettool_cpu_modulated_deform_conv.restype = _i32
        lib.dettool_cpu_ps_roi_align.argtypes = [_i32, _ptr, _ptr] + [_i32] * 6 + [_f32, _i32, _ptr]
        lib.dettool_cpu_ps_roi_align.restype = _i32
        lib.dettool_cpu_float_to_half.argtypes = [_ptr, _ptr, _i64]
        lib.dettool_cpu_half_to_float.argtypes = [_ptr, _ptr, _i64]
        self.lib = lib

    def _check(self, rc: int) -> None:
        if rc != 0:
            raise ValueError(self.lib.dettool_cpu_last_error().decode())

    def batched_nms(self, boxes: torch.Tensor, scores: torch.Tensor, score_threshold: float,
                    iou_threshold: float, max_output_boxes: int) -> tuple[torch.Tensor, ...]:
        """DettoolBatchedNMS.

        Args:
            boxes: ``Tensor[B, N, 4]`` or ``Tensor[B, N, C, 4]`` float32, xyxy.
            scores: ``Tensor[B, N, C]`` float32.

        Returns: ``num_dets [B]`` int32, ``det_boxes [B, K, 4]``, ``det_scores [B, K]``,
        ``det_classes [B, K]`` int32.
        """
        boxes = boxes.contiguous().float()
        scores = scores.contiguous().float()
        b, n, c = scores.shape
        k = max_output_boxes
        num_dets = torch.full((b,), -7, dtype=torch.int32)
        det_boxes = torch.full((b, k, 4), float("nan"))
        det_scores = torch.full((b, k), float("nan"))
        det_classes = torch.full((b, k), -7, dtype=torch.int32)
        self._check(self.lib.dettool_cpu_batched_nms(
            _p(boxes), _p(scores), b, n, c, int(boxes.dim() == 4), score_threshold, iou_threshold, k,
            _p(num_dets), _p(det_boxes), _p(det_scores), _p(det_classes)))
        return num_dets, det_boxes, det_scores, det_classes

    def multi_level_roi_align(self, rois: torch.Tensor, feats: list[torch.Tensor], featmap_strides: list[int],
                              output_size: tuple[int, int], sampling_ratio: int, finest_scale: int,
                              aligned: bool, roi_scale_factor: float = 1.0) -> torch.Tensor:
        """DettoolMultiLevelRoIAlign.

        Args:
            rois: ``Tensor[R, 5]`` float32 ``(batch_index, x1, y1, x2, y2)``.
            feats: L ``Tensor[B, C, H_l, W_l]``, all float32 or all float16.
            roi_scale_factor: float32 attribute; 1 = no rescaling.

        Returns: ``Tensor[R, C, output_size[0], output_size[1]]`` of the features' type.
        """
        rois = rois.contiguous().float()
        feats = [f.contiguous() for f in feats]
        dtype = _dtype_code(feats[0])
        num_levels = len(feats)
        b, c = feats[0].shape[:2]
        levels = (ctypes.c_void_p * num_levels)(*[f.data_ptr() for f in feats])
        heights = (_i32 * num_levels)(*[f.shape[2] for f in feats])
        widths = (_i32 * num_levels)(*[f.shape[3] for f in feats])
        strides = (_i32 * num_levels)(*featmap_strides)
        out = torch.full((rois.shape[0], c, *output_size), float("nan"), dtype=feats[0].dtype)
        self._check(self.lib.dettool_cpu_multi_level_roi_align(
            dtype, _p(rois), rois.shape[0], ctypes.cast(levels, _ptr), ctypes.cast(heights, _ptr),
            ctypes.cast(widths, _ptr), ctypes.cast(strides, _ptr), num_levels, b, c, output_size[0],
            output_size[1], sampling_ratio, finest_scale, int(aligned), roi_scale_factor, _p(out)))
        return out

    def modulated_deform_conv(self, input: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor,
                              weight: torch.Tensor, bias: torch.Tensor, stride: tuple[int, int],
                              padding: tuple[int, int], dilation: tuple[int, int], groups: int,
                              deform_groups: int) -> torch.Tensor:
        """DettoolModulatedDeformConv; every tensor float32 or every tensor float16.

        Returns: ``Tensor[B, Co, Ho, Wo]``.
        """
        tensors = [t.contiguous() for t in (input, offset, mask, weight, bias)]
        dtype = _dtype_code(tensors[0])
        if any(t.dtype != tensors[0].dtype for t in tensors):
            raise TypeError("every tensor must have the input's type")
        b, c, h, w = input.shape
        co, _, kh, kw = weight.shape
        ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
        wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
        out = torch.full((b, co, max(ho, 0), max(wo, 0)), float("nan"), dtype=input.dtype)
        self._check(self.lib.dettool_cpu_modulated_deform_conv(
            dtype, *[_p(t) for t in tensors], b, c, h, w, co, kh, kw, stride[0], stride[1], padding[0],
            padding[1], dilation[0], dilation[1], groups, deform_groups, _p(out)))
        return out

    def ps_roi_align(self, features: torch.Tensor, rois: torch.Tensor, output_size: int, spatial_scale: float,
                     sampling_ratio: int) -> torch.Tensor:
        """DettoolPSRoIAlign.

        Args:
            features: ``Tensor[B, C * k * k, H, W]`` float32 or float16 (``k = output_size``).
            rois: ``Tensor[R, 5]`` float32 ``(batch_index, x1, y1, x2, y2)``.
            spatial_scale: float32 attribute.

        Returns: ``Tensor[R, C, k, k]`` of the features' type.
        """
        features = features.contiguous()
        rois = rois.contiguous().float()
        b, channels, h, w = features.shape
        k = output_size
        out = torch.full((rois.shape[0], channels // max(k * k, 1), k, k), float("nan"), dtype=features.dtype)
        self._check(self.lib.dettool_cpu_ps_roi_align(
            _dtype_code(features), _p(features), _p(rois), rois.shape[0], b, channels, h, w, k, spatial_scale,
            sampling_ratio, _p(out)))
        return out

    def float_to_half(self, x: torch.Tensor) -> torch.Tensor:
        """float32 -> float16 bits (``Tensor`` int16 viewed as float16)."""
        x = x.contiguous().float()
        out = torch.empty(x.shape, dtype=torch.float16)
        self.lib.dettool_cpu_float_to_half(_p(x), _p(out), x.numel())
        return out

    def half_to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous()
        out = torch.empty(x.shape, dtype=torch.float32)
        self.lib.dettool_cpu_half_to_float(_p(x), _p(out), x.numel())
        return out
