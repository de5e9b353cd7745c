/*
 * DettoolPSRoIAlign: the per-element math shared by the CUDA kernel and the CPU implementation.
 *
 * Semantics (docs/custom_ops.md): output (r, c, ph, pw) is torchvision.ops.ps_roi_align's, the
 * mean of the bilinear samples of bin (ph, pw) of RoI r = (batch_index, x1, y1, x2, y2) read from
 * input channel (c * k + ph) * k + pw, the RoI scaled by spatial_scale and shifted by half a
 * pixel (torchvision's roi_align with aligned=True samples alike: common/roi_align_sampling.h).
 * A RoI with an empty adaptive sampling grid or a batch index outside (-1, B) gives 0.
 * Coordinates, weights and sums are float32 whatever the feature type. No TensorRT types here.
 */
#pragma once

#include "common/host_device.h"
#include "common/precision.h"
#include "common/roi_align_sampling.h"

#include <cmath>
#include <cstdint>

namespace dettool
{
namespace psroialign
{

//! The node's attributes.
struct Params
{
    int32_t outputSize{7}; //!< k: the output is k x k, the input has C * k * k channels
    float spatialScale{1.0F};
    int32_t samplingRatio{0};
};

//! Sizes of one call: features [B, channels, H, W] with channels = C * k * k, rois [R, 5].
struct Shape
{
    int32_t numRois{0};
    int32_t batch{0};
    int32_t channels{0};
    int32_t height{0};
    int32_t width{0};
};

//! Bins per RoI, k * k (also the input channels per output channel).
inline int64_t binsOf(Params const& params)
{
    return static_cast<int64_t>(params.outputSize) * params.outputSize;
}

//! Why `params` are not valid attributes, or nullptr.
inline char const* checkParams(Params const& params)
{
    if (params.outputSize < 1 || params.samplingRatio < 0)
    {
        return "output_size must be >= 1 and sampling_ratio >= 0";
    }
    if (!(params.spatialScale > 0.0F) || std::isinf(params.spatialScale))
    {
        return "spatial_scale must be finite and > 0";
    }
    return nullptr;
}

//! Why `shape` and `params` are not a valid call, or nullptr.
inline char const* checkShape(Shape const& shape, Params const& params)
{
    if (char const* error = checkParams(params))
    {
        return error;
    }
    if (shape.numRois < 0 || shape.batch < 0 || shape.channels < 0)
    {
        return "sizes must not be negative";
    }
    if (shape.channels % binsOf(params) != 0)
    {
        return "the feature channels must be a multiple of output_size * output_size";
    }
    if (shape.batch > 0 && shape.channels > 0 && (shape.height < 1 || shape.width < 1))
    {
        return "the feature map must have positive height and width";
    }
    return nullptr;
}

//! Output channels C = channels / (k * k).
inline int32_t outputChannels(Shape const& shape, Params const& params)
{
    return static_cast<int32_t>(shape.channels / binsOf(params));
}

//! Input channel that bin (ph, pw) of output channel c reads: (c * k + ph) * k + pw.
DETTOOL_HOST_DEVICE DETTOOL_INLINE int64_t inputChannel(int32_t c, int32_t ph, int32_t pw, int32_t k)
{
    return (static_cast<int64_t>(c) * k + ph) * k + pw;
}

//! Output element (r, c, ph, pw), as float: RoIAlign of bin (ph, pw) on its input channel; 0 for a
//! RoI whose batch index is outside the batch (and, through count >= 1, for one that samples no
//! point: torchvision's 0 / 0).
//!
//! \param features [B, channels, H, W]
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float pooledValue(Shape const& shape, Params const& params, T const* features,
    float const* rois, int32_t r, int32_t c, int32_t ph, int32_t pw)
{
    float const* roi = rois + static_cast<int64_t>(r) * 5;
    int32_t const b = roialign::roiBatchIndex(roi[0], shape.batch);
    if (b < 0)
    {
        return 0.0F;
    }
    int32_t const k = params.outputSize;
    roialign::RoiGeometry const g
        = roialign::roiGeometry(roi[1], roi[2], roi[3], roi[4], params.spatialScale, k, k, params.samplingRatio, true);
    int64_t const plane = static_cast<int64_t>(b) * shape.channels + inputChannel(c, ph, pw, k);
    return roialign::poolBin(features + plane * shape.height * shape.width, shape.height, shape.width, g, ph, pw);
}

} // namespace psroialign
} // namespace dettool
