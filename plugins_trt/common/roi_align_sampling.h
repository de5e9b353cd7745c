/*
 * torchvision's RoIAlign sampling of one bin, shared by the RoIAlign plugins
 * (DettoolMultiLevelRoIAlign, DettoolPSRoIAlign) and so by their CUDA kernels and CPU
 * implementations: where a RoI's bins and sampling points lie, the bilinear interpolation, the
 * mean of a bin's samples. Coordinates, weights and sums are float32 whatever the feature type.
 * Operation for operation torchvision's roi_align kernel (its ps_roi_align kernel samples alike);
 * no TensorRT types here.
 */
#pragma once

#include "common/host_device.h"
#include "common/precision.h"

#include <cmath>
#include <cstdint>
#include <math.h>

namespace dettool
{
namespace roialign
{

//! Largest number of sampling points per bin side (adaptive sampling of absurdly large RoIs; only
//! those on the feature map are visited, see samplesOnMap).
constexpr float kMaxSamplingGrid = 65536.0F;

//! Where one RoI's bins and sampling points lie on its feature map (torchvision's roi_align).
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

//! The bins of RoI (x1, y1, x2, y2) on a map of `spatialScale`; `aligned` shifts it by half a pixel
//! (torchvision's aligned=True, always so in ps_roi_align), otherwise it is at least 1 x 1.
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
    // In 64 bits: two capped adaptive grids of 65536 would overflow int32 (the same count below 2^24).
    int64_t const n = static_cast<int64_t>(g.gridH) * g.gridW;
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
//! Positions grow with the sample index when binSize >= 0, shrink when binSize < 0 (an inverted
//! RoI, x2 < x1, with a fixed sampling_ratio), or are all NaN; either way the samples on the map
//! are one run, found by bisection. Summing only those gives torchvision's sum exactly (the others
//! add +0) and bounds the work of a RoI far larger than its map: an absurd RoI (TensorRT times the
//! plugin on arbitrary inputs) would otherwise take up to 65536 x 65536 samples per output element,
//! all off the map.
DETTOOL_HOST_DEVICE DETTOOL_INLINE void samplesOnMap(
    float start, int32_t bin, float binSize, int32_t grid, int32_t size, int32_t& first, int32_t& last)
{
    bool const falling = binSize < 0.0F;
    float const far = static_cast<float>(size);
    int32_t lo = 0;
    int32_t hi = grid;
    while (lo < hi) // the first sample that has reached the map: at or after -1 (at or before size if falling)
    {
        int32_t const mid = lo + (hi - lo) / 2;
        float const p = samplePosition(start, bin, binSize, mid, grid);
        if (falling ? p <= far : p >= -1.0F)
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
    while (lo < hi) // the first sample that has left it: past size (before -1 if falling)
    {
        int32_t const mid = lo + (hi - lo) / 2;
        float const p = samplePosition(start, bin, binSize, mid, grid);
        if (falling ? p < -1.0F : p > far)
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
//! those on the map are visited (samplesOnMap); the divisor is still gridH x gridW (at least 1).
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

//! Image of a RoI, or -1 when batch_index is not in (-1, B) (that RoI's output is 0). The index is
//! truncated toward zero, as torchvision's int conversion does.
DETTOOL_HOST_DEVICE DETTOOL_INLINE int32_t roiBatchIndex(float batchIndex, int32_t batch)
{
    return (batchIndex > -1.0F && batchIndex < static_cast<float>(batch)) ? static_cast<int32_t>(batchIndex) : -1;
}

} // namespace roialign
} // namespace dettool
