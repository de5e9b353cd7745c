/*
 * DettoolMultiLevelRoIAlign: the per-element math shared by the CUDA kernel and the CPU
 * implementation.
 *
 * Semantics (docs/custom_ops.md): RoI r = (batch_index, x1, y1, x2, y2) goes to level
 * l = clamp(floor(log2(sqrt((x2 - x1) * (y2 - y1)) / finest_scale + 1e-6)), 0, L - 1); unless
 * roi_scale_factor is 1 its box is then scaled about its centre (MMDetection's roi_rescale), and
 * it is pooled on level l exactly as torchvision.ops.roi_align (spatial_scale =
 * 1 / featmap_strides[l]). Coordinates, weights and sums are float32 whatever the feature type.
 * The sampling is torchvision's roi_align kernel operation for operation (common/roi_align_sampling.h,
 * shared with DettoolPSRoIAlign). No TensorRT types here.
 */
#pragma once

#include "common/host_device.h"
#include "common/precision.h"
#include "common/roi_align_sampling.h"

#include <cmath>
#include <cstdint>

namespace dettool
{
namespace roialign
{

//! Most feature levels one node can take.
constexpr int32_t kMaxLevels = 8;

//! The node's attributes; spatialScale[l] = float(1.0 / featmap_strides[l]) (see spatialScaleOf).
struct Params
{
    int32_t outputHeight{7};
    int32_t outputWidth{7};
    int32_t samplingRatio{0};
    int32_t finestScale{56};
    bool aligned{true};
    float roiScaleFactor{1.0F}; //!< 1: the RoIs are pooled as given
    int32_t numLevels{0};
    float spatialScale[kMaxLevels]{};
};

//! Sizes of one call: rois [R, 5], level l features [B, C, height[l], width[l]].
struct Shape
{
    int32_t numRois{0};
    int32_t batch{0};
    int32_t channels{0};
    int32_t height[kMaxLevels]{};
    int32_t width[kMaxLevels]{};
};

//! 1 / stride rounded once to float32 from double, as torchvision receives spatial_scale.
inline float spatialScaleOf(int32_t stride)
{
    return static_cast<float>(1.0 / static_cast<double>(stride));
}

//! Why `shape` and `params` are not a valid call, or nullptr.
inline char const* checkShape(Shape const& shape, Params const& params)
{
    if (params.numLevels < 1 || params.numLevels > kMaxLevels)
    {
        return "the number of feature levels must be in [1, 8]";
    }
    if (params.outputHeight < 1 || params.outputWidth < 1 || params.samplingRatio < 0 || params.finestScale < 1)
    {
        return "output_height and output_width must be >= 1, sampling_ratio >= 0, finest_scale >= 1";
    }
    if (!(params.roiScaleFactor > 0.0F) || std::isinf(params.roiScaleFactor))
    {
        return "roi_scale_factor must be finite and > 0";
    }
    for (int32_t l = 0; l < params.numLevels; ++l)
    {
        if (!(params.spatialScale[l] > 0.0F))
        {
            return "featmap_strides must be >= 1";
        }
        if (shape.batch > 0 && (shape.height[l] < 1 || shape.width[l] < 1))
        {
            return "feature maps must have positive height and width";
        }
    }
    return nullptr;
}

//! FPN level of a RoI (MMDetection's map_roi_levels), or -1 for a RoI of negative area.
//!
//! floor(log2(v)) is found exactly by comparing v with powers of two, so the CPU and the GPU
//! agree to the bit. A negative area (x2 < x1 xor y2 < y1) has a NaN scale and no level: the
//! RoI's output is 0 (docs/custom_ops.md).
DETTOOL_HOST_DEVICE DETTOOL_INLINE int32_t mapRoiLevel(
    float x1, float y1, float x2, float y2, int32_t finestScale, int32_t numLevels)
{
    float const area = mulRn(subRn(x2, x1), subRn(y2, y1));
    if (!(area >= 0.0F)) // negative or NaN
    {
        return -1;
    }
    float const v = addRn(sqrtf(area) / static_cast<float>(finestScale), 1e-6F);
    int32_t level = 0;
    float bound = 2.0F;
    while (level < numLevels - 1 && v >= bound)
    {
        ++level;
        bound *= 2.0F;
    }
    return level;
}

//! One side [low, high] of a RoI scaled `factor` times about its centre, as MMDetection's
//! roi_rescale computes it in float32: c = (low + high) * 0.5, half = (high - low) * factor * 0.5,
//! [c - half, c + half]. mulRn / addRn: no FMA, so the CPU and the GPU agree to the bit.
DETTOOL_HOST_DEVICE DETTOOL_INLINE void rescaleSide(float& low, float& high, float factor)
{
    float const centre = mulRn(addRn(low, high), 0.5F);
    float const half = mulRn(mulRn(subRn(high, low), factor), 0.5F);
    low = subRn(centre, half);
    high = addRn(centre, half);
}

//! Output element (r, c, ph, pw), as float: level mapping of the RoI, its rescaling (unless
//! roiScaleFactor is 1), then RoIAlign on that level; 0 for a RoI of negative area or of a batch
//! index outside the batch.
//!
//! \param levels the L feature tensors [B, C, H_l, W_l]
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float pooledValue(Shape const& shape, Params const& params, float const* rois,
    T const* const* levels, int32_t r, int32_t c, int32_t ph, int32_t pw)
{
    float const* roi = rois + static_cast<int64_t>(r) * 5;
    int32_t const b = roiBatchIndex(roi[0], shape.batch);
    if (b < 0)
    {
        return 0.0F;
    }
    float x1 = roi[1];
    float y1 = roi[2];
    float x2 = roi[3];
    float y2 = roi[4];
    int32_t const l = mapRoiLevel(x1, y1, x2, y2, params.finestScale, params.numLevels); // of the RoI as given
    if (l < 0)
    {
        return 0.0F;
    }
    if (params.roiScaleFactor != 1.0F)
    {
        rescaleSide(x1, x2, params.roiScaleFactor);
        rescaleSide(y1, y2, params.roiScaleFactor);
    }
    RoiGeometry const g = roiGeometry(x1, y1, x2, y2, params.spatialScale[l], params.outputHeight, params.outputWidth,
        params.samplingRatio, params.aligned);
    int32_t const height = shape.height[l];
    int32_t const width = shape.width[l];
    T const* plane = levels[l] + (static_cast<int64_t>(b) * shape.channels + c) * height * width;
    return poolBin(plane, height, width, g, ph, pw);
}

} // namespace roialign
} // namespace dettool
