"""``dettool::ps_roi_align``: position-sensitive RoIAlign of R-FCN (``DettoolPSRoIAlign``).

``torchvision.ops.ps_roi_align``: bin ``(ph, pw)`` of output channel ``c`` averages the bilinear
samples of its cell read from input channel ``(c * k + ph) * k + pw``, with torchvision's
half-pixel offset (``aligned=True`` RoIAlign); see docs/custom_ops.md. Two RoIs torchvision
mishandles give zeros: one with an empty adaptive sampling grid (a side of zero or negative
length; torchvision returns 0 for most, but NaN, 0 / 0, where a grid side is exactly 0; its
``roi_align`` returns 0) and one whose batch index is not in ``(-1, B)`` (torchvision reads
outside the batch).

Differentiable with respect to the features (not the RoIs): the gradient is torchvision's own
backward kernel (``_ps_roi_align_backward``, what its autograd runs), on every device.
"""
from __future__ import annotations

import math

import torch
import torchvision  # noqa: F401  (registers torch.ops.torchvision.ps_roi_align and its backward)
from torch import Tensor

from dettool.ops.errors import OpInputError


def _compute_dtype(feat_dtype: torch.dtype) -> torch.dtype:
    """Pooling type: float32 for float16 and float32 features (the spec), float64 for float64."""
    return torch.promote_types(feat_dtype, torch.float32)


def _float32(value: float) -> float:
    return float(torch.tensor(value, dtype=torch.float32))


def _check_inputs(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
                  sampling_ratio: int) -> None:
    name = "ps_roi_align"
    if rois.dim() != 2 or rois.shape[1] != 5:
        raise OpInputError(f"{name}: rois must be [R, 5], got shape {tuple(rois.shape)}")
    if features.dim() != 4:
        raise OpInputError(f"{name}: features must be [B, C * k * k, H, W], got shape {tuple(features.shape)}")
    if output_size < 1:
        raise OpInputError(f"{name}: output_size must be >= 1, got {output_size}")
    bins = output_size * output_size
    if features.shape[1] % bins != 0:
        raise OpInputError(f"{name}: features have {features.shape[1]} channels, not a multiple of "
                           f"output_size * output_size = {bins}")
    if sampling_ratio < 0:
        raise OpInputError(f"{name}: sampling_ratio must be >= 0 (0: adaptive), got {sampling_ratio}")
    scale = _float32(spatial_scale)  # as the ONNX attribute holds it
    if not (math.isfinite(scale) and scale > 0):
        raise OpInputError(f"{name}: spatial_scale must be finite and > 0 in float32, got {spatial_scale}")


def _pooled_rows(rois: Tensor, batch: int, output_size: int, spatial_scale: float, sampling_ratio: int) -> Tensor:
    """Which RoIs have an output other than 0: batch index in ``(-1, B)`` and a sampling grid of at
    least one point.

    The adaptive grid is computed as torchvision does, ``ceil(roi_size / k)`` in the RoIs' type with
    ``roi_size = (p2 * s - 0.5) - (p1 * s - 0.5)``, so the RoIs torchvision turns into NaN are found
    exactly.

    Args:
        rois: ``Tensor[R, 5]`` in the pooling type.

    Returns: ``Tensor[R]`` bool.
    """
    pooled = (rois[:, 0] > -1) & (rois[:, 0] < batch)
    if sampling_ratio == 0:
        for low, high in ((1, 3), (2, 4)):
            size = (rois[:, high] * spatial_scale - 0.5) - (rois[:, low] * spatial_scale - 0.5)
            pooled &= torch.ceil(size / output_size) >= 1
    return pooled


def _in_batch_rois(rois: Tensor, pooled: Tensor) -> Tensor:
    """The RoIs with the batch index of those not pooled set to 0, so torchvision reads inside the batch."""
    return torch.cat([torch.where(pooled, rois[:, 0], torch.zeros_like(rois[:, 0]))[:, None], rois[:, 1:]], dim=1)


@torch.library.custom_op("dettool::ps_roi_align", mutates_args=())
def ps_roi_align_op(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
                    sampling_ratio: int) -> Tensor:
    """Reference kernel of ``torch.ops.dettool.ps_roi_align``; see :func:`ps_roi_align`."""
    _check_inputs(features, rois, output_size, spatial_scale, sampling_ratio)
    dtype = _compute_dtype(features.dtype)
    channels = features.shape[1] // (output_size * output_size)
    if rois.shape[0] == 0:
        return features.new_zeros((0, channels, output_size, output_size))
    rois = rois.to(dtype)
    pooled = _pooled_rows(rois, features.shape[0], output_size, spatial_scale, sampling_ratio)
    out, _ = torch.ops.torchvision.ps_roi_align(features.to(dtype).contiguous(), _in_batch_rois(rois, pooled),
                                                spatial_scale, output_size, output_size, sampling_ratio)
    out = torch.where(pooled[:, None, None, None], out, torch.zeros((), dtype=dtype, device=out.device))
    return out.to(features.dtype)


@ps_roi_align_op.register_fake
def _ps_roi_align_fake(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float,
                       sampling_ratio: int) -> Tensor:
    return features.new_empty((rois.shape[0], features.shape[1] // (output_size * output_size), output_size,
                               output_size))


def _setup_context(ctx, inputs, output) -> None:
    features, rois, output_size, spatial_scale, sampling_ratio = inputs
    ctx.save_for_backward(rois)
    ctx.attributes = (output_size, spatial_scale, sampling_ratio)
    ctx.feat_shape = features.shape
    ctx.feat_dtype = features.dtype
    # The gradient is handed back in the features' layout (see roi_align_grad.roi_align_backward).
    ctx.memory_format = (torch.channels_last if features.is_contiguous(memory_format=torch.channels_last)
                         else torch.contiguous_format)


def _backward(ctx, grad_output: Tensor):
    """Gradient of the features (in their type and layout); None for the RoIs and the attributes."""
    if not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    (rois,) = ctx.saved_tensors
    output_size, spatial_scale, sampling_ratio = ctx.attributes
    batch, channels_in, height, width = ctx.feat_shape
    dtype = _compute_dtype(ctx.feat_dtype)
    rois = rois.detach().to(dtype)
    pooled = _pooled_rows(rois, batch, output_size, spatial_scale, sampling_ratio)
    grad_output = torch.where(pooled[:, None, None, None], grad_output.to(dtype),
                              torch.zeros((), dtype=dtype, device=grad_output.device)).contiguous()
    # Bin (c, ph, pw) reads input channel (c * k + ph) * k + pw: the output's flat channel-bin index.
    channel_mapping = torch.arange(channels_in, dtype=torch.int32, device=grad_output.device)
    channel_mapping = channel_mapping.view(1, -1, output_size, output_size).expand(grad_output.shape).contiguous()
    grad = torch.ops.torchvision._ps_roi_align_backward(grad_output, _in_batch_rois(rois, pooled), channel_mapping,
                                                        spatial_scale, output_size, output_size, sampling_ratio,
                                                        batch, channels_in, height, width)
    return grad.to(ctx.feat_dtype).contiguous(memory_format=ctx.memory_format), None, None, None, None


ps_roi_align_op.register_autograd(_backward, setup_context=_setup_context)


def ps_roi_align(features: Tensor, rois: Tensor, output_size: int, spatial_scale: float = 1.0,
                 sampling_ratio: int = 0) -> Tensor:
    """Position-sensitive RoIAlign of R-FCN (``DettoolPSRoIAlign``).

    ``torchvision.ops.ps_roi_align(features, rois, output_size, spatial_scale, sampling_ratio)``:
    output ``[r, c, ph, pw]`` is the mean of the bilinear samples of bin ``(ph, pw)`` of RoI ``r``
    read from input channel ``(c * k + ph) * k + pw``; the RoI is scaled by ``spatial_scale`` and
    shifted by half a pixel (as ``roi_align(..., aligned=True)``). A RoI whose adaptive sampling
    grid is empty (torchvision: NaN) or whose batch index is outside ``(-1, B)`` gives zeros.
    Sampling and sums run in float32 for float32 and float16 features (float64 for float64).
    Differentiable with respect to ``features``.

    Args:
        features: ``Tensor[B, C * k * k, H, W]`` float32 or float16 (float64 for gradient checks).
        rois: ``Tensor[R, 5]`` rows ``(batch_index, x1, y1, x2, y2)`` in input pixels.
        output_size: ``k``, pooled height and width, ``>= 1``.
        spatial_scale: feature pixels per input pixel (``1 / stride``), finite and ``> 0``.
        sampling_ratio: sampling points per bin side, ``>= 0``; 0 = adaptive ``ceil(roi_size / k)``.

    Returns: ``Tensor[R, C, k, k]`` of the features' type.
    """
    return torch.ops.dettool.ps_roi_align(features, rois, int(output_size), float(spatial_scale),
                                          int(sampling_ratio))
