/*
 * DettoolPSRoIAlign CUDA kernel: one thread per output element (r, c, ph, pw), as torchvision's
 * ps_roi_align kernel.
 */
#include "ps_roi_align/ps_roi_align_kernel.h"

#include <cuda_fp16.h>

namespace dettool
{
namespace psroialign
{
namespace
{

constexpr int32_t kThreads = 256;

template <typename T>
__global__ void __launch_bounds__(kThreads) psRoiAlignKernel(
    Shape shape, Params params, T const* features, float const* rois, T* output, int32_t channelsOut, int64_t total)
{
    int32_t const k = params.outputSize;
    for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < total;
         i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    {
        auto const pw = static_cast<int32_t>(i % k);
        auto const ph = static_cast<int32_t>((i / k) % k);
        auto const c = static_cast<int32_t>((i / k / k) % channelsOut);
        auto const r = static_cast<int32_t>(i / k / k / channelsOut);
        output[i] = fromFloat<T>(pooledValue(shape, params, features, rois, r, c, ph, pw));
    }
}

template <typename T>
cudaError_t launch(Shape const& shape, Params const& params, void const* features, float const* rois, void* output,
    cudaStream_t stream)
{
    int32_t const channelsOut = outputChannels(shape, params);
    int64_t const total = static_cast<int64_t>(shape.numRois) * channelsOut * binsOf(params);
    if (total <= 0)
    {
        return cudaSuccess;
    }
    int64_t const blocks = (total + kThreads - 1) / kThreads;
    auto const grid = static_cast<unsigned int>(blocks < (1 << 30) ? blocks : (1 << 30));
    psRoiAlignKernel<T><<<grid, kThreads, 0, stream>>>(shape, params, static_cast<T const*>(features), rois,
        static_cast<T*>(output), channelsOut, total);
    return cudaGetLastError();
}

} // namespace

cudaError_t launchPsRoiAlign(Precision precision, Shape const& shape, Params const& params, void const* features,
    float const* rois, void* output, cudaStream_t stream)
{
    if (checkShape(shape, params) != nullptr)
    {
        return cudaErrorInvalidValue;
    }
    switch (precision)
    {
    case Precision::kFLOAT32: return launch<float>(shape, params, features, rois, output, stream);
    case Precision::kFLOAT16: return launch<__half>(shape, params, features, rois, output, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace psroialign
} // namespace dettool
