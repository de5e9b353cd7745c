/*
 * DettoolMultiLevelRoIAlign CUDA kernel: one thread per output element (r, c, ph, pw), as
 * torchvision's roi_align kernel; the thread maps its RoI to a level first.
 */
#include "multi_level_roi_align/multi_level_roi_align_kernel.h"

#include <cuda_fp16.h>

namespace dettool
{
namespace roialign
{
namespace
{

constexpr int32_t kThreads = 256;

template <typename T>
struct LevelPointers
{
    T const* level[kMaxLevels];
};

template <typename T>
__global__ void __launch_bounds__(kThreads) multiLevelRoiAlignKernel(
    Shape shape, Params params, float const* rois, LevelPointers<T> levels, T* output, int64_t total)
{
    int32_t const pooledW = params.outputWidth;
    int32_t const pooledH = params.outputHeight;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        auto const pw = static_cast<int32_t>(i % pooledW);
        auto const ph = static_cast<int32_t>((i / pooledW) % pooledH);
        auto const c = static_cast<int32_t>((i / pooledW / pooledH) % shape.channels);
        auto const r = static_cast<int32_t>(i / pooledW / pooledH / shape.channels);
        output[i] = fromFloat<T>(pooledValue(shape, params, rois, levels.level, r, c, ph, pw));
    }
}

template <typename T>
cudaError_t launch(Shape const& shape, Params const& params, float const* rois, void const* const* levels,
    void* output, cudaStream_t stream)
{
    int64_t const total = static_cast<int64_t>(shape.numRois) * shape.channels * params.outputHeight
        * params.outputWidth;
    if (total <= 0)
    {
        return cudaSuccess;
    }
    LevelPointers<T> pointers{};
    for (int32_t l = 0; l < params.numLevels; ++l)
    {
        pointers.level[l] = static_cast<T const*>(levels[l]);
    }
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    auto const grid = static_cast<unsigned int>(blocks < (1 << 30) ? blocks : (1 << 30));
    multiLevelRoiAlignKernel<T>
        <<<grid, kThreads, 0, stream>>>(shape, params, rois, pointers, static_cast<T*>(output), total);
    return cudaGetLastError();
}

} // namespace

cudaError_t launchMultiLevelRoiAlign(Precision precision, Shape const& shape, Params const& params, float const* rois,
    void const* const* levels, void* output, cudaStream_t stream)
{
    if (params.numLevels < 1 || params.numLevels > kMaxLevels)
    {
        return cudaErrorInvalidValue;
    }
    switch (precision)
    {
    case Precision::kFLOAT32: return launch<float>(shape, params, rois, levels, output, stream);
    case Precision::kFLOAT16: return launch<__half>(shape, params, rois, levels, output, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace roialign
} // namespace dettool
