/*
 * DettoolModulatedDeformConv: the per-element math shared by the CUDA kernel and the CPU
 * implementation.
 *
 * Semantics (docs/custom_ops.md): torchvision.ops.deform_conv2d(input, offset, weight, bias,
 * stride, padding, dilation, mask). Tap (i, j) of output pixel (oy, ox) reads input channel c at
 * y = oy * stride_h - pad_h + i * dil_h + dy, x = ox * stride_w - pad_w + j * dil_w + dx,
 * bilinearly, pixels outside the input reading 0, times the mask. The column value below is
 * torchvision's deformable_im2col element operation for operation, in float32 whatever the
 * tensor type; the output is sum_k weight[co, k] * column[k] summed in k order, plus bias.
 * No TensorRT types here.
 */
#pragma once

#include "common/host_device.h"
#include "common/precision.h"

#include <cstdint>
#include <math.h>

namespace dettool
{
namespace dcn
{

//! The node's attributes.
struct Params
{
    int32_t strideH{1};
    int32_t strideW{1};
    int32_t padH{0};
    int32_t padW{0};
    int32_t dilationH{1};
    int32_t dilationW{1};
    int32_t groups{1};
    int32_t deformGroups{1};
};

//! Sizes of one call: input [B, C, H, W], weight [Co, C / groups, kH, kW], output [B, Co, Ho, Wo],
//! offset [B, 2 * G * kH * kW, Ho, Wo], mask [B, G * kH * kW, Ho, Wo].
struct Shape
{
    int32_t batch{0};
    int32_t channels{0};
    int32_t height{0};
    int32_t width{0};
    int32_t outChannels{0};
    int32_t kernelH{0};
    int32_t kernelW{0};
    int32_t outHeight{0};
    int32_t outWidth{0};
};

//! Output size of one spatial axis: (in + 2 * pad - dil * (k - 1) - 1) / stride + 1 (the numerator
//! must not be negative: callers check it with outputSizeValid).
DETTOOL_HOST_DEVICE DETTOOL_INLINE int32_t outputSize(int32_t in, int32_t pad, int32_t dilation, int32_t kernel, int32_t stride)
{
    return (in + 2 * pad - dilation * (kernel - 1) - 1) / stride + 1;
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE bool outputSizeValid(int32_t in, int32_t pad, int32_t dilation, int32_t kernel, int32_t stride)
{
    return stride > 0 && dilation > 0 && kernel > 0 && pad >= 0 && in + 2 * pad - dilation * (kernel - 1) - 1 >= 0;
}

//! torchvision's deform_conv2d bilinear interpolation of one H x W plane at (h, w); taps outside
//! (-1, H) x (-1, W) read 0, and so do the out-of-image corners of the others.
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float bilinear(T const* plane, int32_t height, int32_t width, float h, float w)
{
    if (!(h > -1.0F && h < static_cast<float>(height) && w > -1.0F && w < static_cast<float>(width)))
    {
        return 0.0F; // also NaN
    }
    auto const hLow = static_cast<int32_t>(floorf(h));
    auto const wLow = static_cast<int32_t>(floorf(w));
    int32_t const hHigh = hLow + 1;
    int32_t const wHigh = wLow + 1;
    float const lh = h - static_cast<float>(hLow);
    float const lw = w - static_cast<float>(wLow);
    float const hh = 1.0F - lh;
    float const hw = 1.0F - lw;
    float const v1 = (hLow >= 0 && wLow >= 0) ? toFloat(plane[static_cast<int64_t>(hLow) * width + wLow]) : 0.0F;
    float const v2
        = (hLow >= 0 && wHigh <= width - 1) ? toFloat(plane[static_cast<int64_t>(hLow) * width + wHigh]) : 0.0F;
    float const v3
        = (hHigh <= height - 1 && wLow >= 0) ? toFloat(plane[static_cast<int64_t>(hHigh) * width + wLow]) : 0.0F;
    float const v4 = (hHigh <= height - 1 && wHigh <= width - 1)
        ? toFloat(plane[static_cast<int64_t>(hHigh) * width + wHigh])
        : 0.0F;
    float const w1 = hh * hw;
    float const w2 = hh * lw;
    float const w3 = lh * hw;
    float const w4 = lh * lw;
    return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
}

//! Column entry k = (c, tap) of output pixel (oy, ox) of image b: mask * bilinear sample.
//!
//! \param c   input channel, 0 <= c < C (its deform group is c / (C / G))
//! \param tap kernel tap i * kW + j
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float columnValue(Shape const& s, Params const& p, T const* input, T const* offset,
    T const* mask, int32_t b, int32_t c, int32_t tap, int32_t oy, int32_t ox)
{
    int32_t const taps = s.kernelH * s.kernelW;
    int32_t const deformGroup = c / (s.channels / p.deformGroups);
    int64_t const outArea = static_cast<int64_t>(s.outHeight) * s.outWidth;
    int64_t const pixel = static_cast<int64_t>(oy) * s.outWidth + ox;
    int64_t const groupPlane = static_cast<int64_t>(b) * p.deformGroups + deformGroup;
    T const* groupOffset = offset + groupPlane * 2 * taps * outArea;
    float const dy = toFloat(groupOffset[(2 * tap) * outArea + pixel]);
    float const dx = toFloat(groupOffset[(2 * tap + 1) * outArea + pixel]);
    float const m = toFloat(mask[(groupPlane * taps + tap) * outArea + pixel]);
    int32_t const i = tap / s.kernelW;
    int32_t const j = tap % s.kernelW;
    float const y = static_cast<float>(oy * p.strideH - p.padH + i * p.dilationH) + dy;
    float const x = static_cast<float>(ox * p.strideW - p.padW + j * p.dilationW) + dx;
    T const* plane = input + (static_cast<int64_t>(b) * s.channels + c) * s.height * s.width;
    return m * bilinear(plane, s.height, s.width, y, x);
}

//! Why `shape` and `params` are not a valid call, or nullptr.
inline char const* checkShape(Shape const& s, Params const& p)
{
    if (p.groups < 1 || p.deformGroups < 1)
    {
        return "groups and deform_groups must be >= 1";
    }
    if (s.channels % p.groups != 0 || s.outChannels % p.groups != 0)
    {
        return "input and output channels must be divisible by groups";
    }
    if (s.channels % p.deformGroups != 0)
    {
        return "input channels must be divisible by deform_groups";
    }
    if (s.kernelH < 1 || s.kernelW < 1 || s.height < 1 || s.width < 1)
    {
        return "kernel and input must have positive height and width";
    }
    if (!outputSizeValid(s.height, p.padH, p.dilationH, s.kernelH, p.strideH)
        || !outputSizeValid(s.width, p.padW, p.dilationW, s.kernelW, p.strideW))
    {
        return "stride and dilation must be >= 1, padding >= 0, and the dilated kernel must fit the padded input";
    }
    if (s.outHeight != outputSize(s.height, p.padH, p.dilationH, s.kernelH, p.strideH)
        || s.outWidth != outputSize(s.width, p.padW, p.dilationW, s.kernelW, p.strideW))
    {
        return "offset and mask height and width must be the output size";
    }
    return nullptr;
}

} // namespace dcn
} // namespace dettool
