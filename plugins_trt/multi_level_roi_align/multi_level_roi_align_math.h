/*
 * DettoolMultiLevelRoIAlign: the per-element math shared by the CUDA kernel and the CPU
 * implementation.
 *
 * Semantics (docs/custom_ops.md): RoI r = (batch_index, x1, y1, x2, y2) goes to level
 * l = clamp(floor(log2(sqrt((x2 - x1) * (y2 - y1)) / finest_scale + 1e-6)), 0, L - 1); unless
 * roi_scale_factor is 1 its box is then scaled about its centre (MMDetection's roi_rescale), and
 * it is pooled on level l exactly as torchvision.ops.roi_align (spatial_scale =
 * 1 / featmap_strides[l]). Coordinates, weights and sums are float32 whatever the feature type.
 * The sampling below is torchvision's roi_align kernel operation for operation. No TensorRT types
 * here.
 */
#pragma once

#include "common/host_device.h"
#include "common/precision.h"

#include <cmath>
#include <math.h>
#include <cstdint>

namespace dettool
{
namespace roialign
{

//! Most feature levels one node can take.
constexpr int32_t kMaxLevels = 8;

//! Largest number of sampling points per bin side (adaptive sampling of absurdly large RoIs; only
//! those on the feature map are visited, see samplesOnMap).
constexpr float kMaxSamplingGrid = 65536.0F;

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

//! Where one RoI's bins and sampling points lie on its level (torchvision's roi_align).
struct RoiGeometry
{
    float startH;
    float startW;
    float binH;
    float binW;
    int32_t gridH;
    int32_t gridW;
    float count; //!< samples averaged per bin, at least 1
};

DETTOOL_HOST_DEVICE DETTOOL_INLINE int32_t samplingGrid(int32_t samplingRatio, float roiSize, int32_t pooledSize)
{
    if (samplingRatio > 0)
    {
        return samplingRatio;
    }
    // ceil(roi_size / pooled_size); a negative or NaN size samples nothing, as in torchvision.
    float const g = ceilf(roiSize / static_cast<float>(pooledSize));
    return g >= 1.0F ? static_cast<int32_t>(minOf(g, kMaxSamplingGrid)) : 0;
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE RoiGeometry roiGeometry(float x1, float y1, float x2, float y2,
    float spatialScale, int32_t pooledH, int32_t pooledW, int32_t samplingRatio, bool aligned)
{
    float const offset = aligned ? 0.5F : 0.0F;
    RoiGeometry g;
    g.startW = subRn(mulRn(x1, spatialScale), offset);
    g.startH = subRn(mulRn(y1, spatialScale), offset);
    float const endW = subRn(mulRn(x2, spatialScale), offset);
    float const endH = subRn(mulRn(y2, spatialScale), offset);
    float roiW = subRn(endW, g.startW);
    float roiH = subRn(endH, g.startH);
    if (!aligned)
    {
        roiW = maxOf(roiW, 1.0F);
        roiH = maxOf(roiH, 1.0F);
    }
    g.binH = roiH / static_cast<float>(pooledH);
    g.binW = roiW / static_cast<float>(pooledW);
    g.gridH = samplingGrid(samplingRatio, roiH, pooledH);
    g.gridW = samplingGrid(samplingRatio, roiW, pooledW);
    int32_t const n = g.gridH * g.gridW;
    g.count = static_cast<float>(n > 1 ? n : 1);
    return g;
}

//! Sampling coordinate `sample` of bin `bin`: start + bin * binSize + (sample + .5) * binSize / grid.
DETTOOL_HOST_DEVICE DETTOOL_INLINE float samplePosition(float start, int32_t bin, float binSize, int32_t sample, int32_t grid)
{
    return addRn(addRn(start, mulRn(static_cast<float>(bin), binSize)),
        mulRn(static_cast<float>(sample) + 0.5F, binSize) / static_cast<float>(grid));
}

//! torchvision's roi_align bilinear interpolation of one H x W plane at (y, x); 0 outside
//! [-1, H] x [-1, W].
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float bilinear(T const* plane, int32_t height, int32_t width, float y, float x)
{
    if (!(y >= -1.0F && y <= static_cast<float>(height) && x >= -1.0F && x <= static_cast<float>(width)))
    {
        return 0.0F; // also NaN
    }
    if (y <= 0.0F)
    {
        y = 0.0F;
    }
    if (x <= 0.0F)
    {
        x = 0.0F;
    }
    auto yLow = static_cast<int32_t>(y);
    auto xLow = static_cast<int32_t>(x);
    int32_t yHigh;
    int32_t xHigh;
    if (yLow >= height - 1)
    {
        yHigh = yLow = height - 1;
        y = static_cast<float>(yLow);
    }
    else
    {
        yHigh = yLow + 1;
    }
    if (xLow >= width - 1)
    {
        xHigh = xLow = width - 1;
        x = static_cast<float>(xLow);
    }
    else
    {
        xHigh = xLow + 1;
    }
    float const ly = y - static_cast<float>(yLow);
    float const lx = x - static_cast<float>(xLow);
    float const hy = 1.0F - ly;
    float const hx = 1.0F - lx;
    float const v1 = toFloat(plane[static_cast<int64_t>(yLow) * width + xLow]);
    float const v2 = toFloat(plane[static_cast<int64_t>(yLow) * width + xHigh]);
    float const v3 = toFloat(plane[static_cast<int64_t>(yHigh) * width + xLow]);
    float const v4 = toFloat(plane[static_cast<int64_t>(yHigh) * width + xHigh]);
    float const w1 = hy * hx;
    float const w2 = hy * lx;
    float const w3 = ly * hx;
    float const w4 = ly * lx;
    return w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
}

//! The samples [first, last) of one side of a bin whose positions lie in [-1, size], where
//! bilinear() reads the map; it is 0 at every other sample.
//!
//! Positions grow with the sample index (binSize >= 0 whenever grid >= 1), or are all NaN, so the
//! samples on the map are one run, found by bisection. Summing only those gives torchvision's sum
//! exactly (the others add +0) and bounds the work of a RoI far larger than its map: an absurd RoI
//! (TensorRT times the plugin on arbitrary inputs) would otherwise take up to 65536 x 65536
//! samples per output element, all off the map.
DETTOOL_HOST_DEVICE DETTOOL_INLINE void samplesOnMap(
    float start, int32_t bin, float binSize, int32_t grid, int32_t size, int32_t& first, int32_t& last)
{
    int32_t lo = 0;
    int32_t hi = grid;
    while (lo < hi) // the first sample at or after -1
    {
        int32_t const mid = lo + (hi - lo) / 2;
        if (samplePosition(start, bin, binSize, mid, grid) >= -1.0F)
        {
            hi = mid;
        }
        else
        {
            lo = mid + 1;
        }
    }
    first = lo;
    hi = grid;
    while (lo < hi) // the first sample past size
    {
        int32_t const mid = lo + (hi - lo) / 2;
        if (samplePosition(start, bin, binSize, mid, grid) > static_cast<float>(size))
        {
            hi = mid;
        }
        else
        {
            lo = mid + 1;
        }
    }
    last = lo;
}

//! Pooled value of bin (ph, pw): the mean of its gridH x gridW bilinear samples, of which only
//! those on the map are visited (samplesOnMap); the divisor is still gridH x gridW.
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE float poolBin(
    T const* plane, int32_t height, int32_t width, RoiGeometry const& g, int32_t ph, int32_t pw)
{
    int32_t firstY;
    int32_t lastY;
    int32_t firstX;
    int32_t lastX;
    samplesOnMap(g.startH, ph, g.binH, g.gridH, height, firstY, lastY);
    samplesOnMap(g.startW, pw, g.binW, g.gridW, width, firstX, lastX);
    float sum = 0.0F;
    for (int32_t iy = firstY; iy < lastY; ++iy)
    {
        float const y = samplePosition(g.startH, ph, g.binH, iy, g.gridH);
        for (int32_t ix = firstX; ix < lastX; ++ix)
        {
            float const x = samplePosition(g.startW, pw, g.binW, ix, g.gridW);
            sum += bilinear(plane, height, width, y, x);
        }
    }
    return sum / g.count;
}

//! Image of a RoI, or -1 when batch_index is not in [0, B) (that RoI's output is 0). The index is
//! truncated toward zero, as torchvision's int conversion does.
DETTOOL_HOST_DEVICE DETTOOL_INLINE int32_t roiBatchIndex(float batchIndex, int32_t batch)
{
    return (batchIndex > -1.0F && batchIndex < static_cast<float>(batch)) ? static_cast<int32_t>(batchIndex) : -1;
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
