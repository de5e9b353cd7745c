/*
 * DettoolModulatedDeformConv CUDA kernel: per (image, group), output[co, p] = sum_k weight[co, k]
 * * column[k, p] + bias[co], computed as a tiled GEMM (64 output channels x 64 pixels per block,
 * k in steps of 16) whose column tile is filled by sampling the input (columnValue) instead of
 * reading an im2col buffer. Each thread sums its outputs in k order, as the CPU implementation.
 */
#include "modulated_deform_conv/modulated_deform_conv_kernel.h"

#include <cuda_fp16.h>

namespace dettool
{
namespace dcn
{
namespace
{

constexpr int32_t kTileM = 64; // output channels per block
constexpr int32_t kTileN = 64; // output pixels per block
constexpr int32_t kTileK = 16;
constexpr int32_t kThreads = 256; // 16 x 16 threads, 4 x 4 outputs each

template <typename T>
__global__ void __launch_bounds__(kThreads) modulatedDeformConvKernel(Shape s, Params p, T const* input,
    T const* offset, T const* mask, T const* weight, T const* bias, T* output, int32_t tilesM)
{
    __shared__ float sWeight[kTileK][kTileM + 4];
    __shared__ float sColumn[kTileK][kTileN];

    int32_t const group = blockIdx.y / tilesM;
    int32_t const m0 = (blockIdx.y % tilesM) * kTileM;
    int32_t const n0 = blockIdx.x * kTileN;
    int32_t const b = blockIdx.z;
    int32_t const tid = threadIdx.x;
    int32_t const tx = tid % 16;
    int32_t const ty = tid / 16;

    int32_t const outPerGroup = s.outChannels / p.groups;
    int32_t const inPerGroup = s.channels / p.groups;
    int32_t const taps = s.kernelH * s.kernelW;
    int32_t const depth = inPerGroup * taps; // GEMM k
    int32_t const pixels = s.outHeight * s.outWidth;

    float acc[4][4];
#pragma unroll
    for (int32_t i = 0; i < 4; ++i)
    {
#pragma unroll
        for (int32_t j = 0; j < 4; ++j)
        {
            acc[i][j] = 0.0F;
        }
    }

    for (int32_t k0 = 0; k0 < depth; k0 += kTileK)
    {
#pragma unroll
        for (int32_t l = 0; l < (kTileK * kTileM) / kThreads; ++l)
        {
            int32_t const e = tid + l * kThreads;
            int32_t const kk = e % kTileK;
            int32_t const mm = e / kTileK;
            int32_t const co = m0 + mm;
            int32_t const k = k0 + kk;
            sWeight[kk][mm] = (co < outPerGroup && k < depth)
                ? toFloat(weight[static_cast<int64_t>(group * outPerGroup + co) * depth + k])
                : 0.0F;
        }
#pragma unroll
        for (int32_t l = 0; l < (kTileK * kTileN) / kThreads; ++l)
        {
            int32_t const e = tid + l * kThreads;
            int32_t const nn = e % kTileN;
            int32_t const kk = e / kTileN;
            int32_t const pixel = n0 + nn;
            int32_t const k = k0 + kk;
            float v = 0.0F;
            if (pixel < pixels && k < depth)
            {
                v = columnValue(s, p, input, offset, mask, b, group * inPerGroup + k / taps, k % taps,
                    pixel / s.outWidth, pixel % s.outWidth);
            }
            sColumn[kk][nn] = v;
        }
        __syncthreads();
#pragma unroll
        for (int32_t kk = 0; kk < kTileK; ++kk)
        {
            float a[4];
            float c[4];
#pragma unroll
            for (int32_t i = 0; i < 4; ++i)
            {
                a[i] = sWeight[kk][ty + 16 * i];
                c[i] = sColumn[kk][tx + 16 * i];
            }
#pragma unroll
            for (int32_t i = 0; i < 4; ++i)
            {
#pragma unroll
                for (int32_t j = 0; j < 4; ++j)
                {
                    acc[i][j] += a[i] * c[j];
                }
            }
        }
        __syncthreads();
    }

#pragma unroll
    for (int32_t i = 0; i < 4; ++i)
    {
        int32_t const co = m0 + ty + 16 * i;
        if (co >= outPerGroup)
        {
            continue;
        }
        int32_t const outChannel = group * outPerGroup + co;
        float const bv = toFloat(bias[outChannel]);
        T* row = output + (static_cast<int64_t>(b) * s.outChannels + outChannel) * pixels;
#pragma unroll
        for (int32_t j = 0; j < 4; ++j)
        {
            int32_t const pixel = n0 + tx + 16 * j;
            if (pixel < pixels)
            {
                row[pixel] = fromFloat<T>(acc[i][j] + bv);
            }
        }
    }
}

template <typename T>
cudaError_t launch(Shape const& s, Params const& p, void const* input, void const* offset, void const* mask,
    void const* weight, void const* bias, void* output, cudaStream_t stream)
{
    int32_t const pixels = s.outHeight * s.outWidth;
    if (s.batch <= 0 || s.outChannels <= 0 || pixels <= 0)
    {
        return cudaSuccess;
    }
    if (p.groups <= 0 || p.deformGroups <= 0 || s.outChannels % p.groups != 0 || s.channels % p.groups != 0
        || s.channels % p.deformGroups != 0 || s.batch > 65535)
    {
        return cudaErrorInvalidValue;
    }
    int32_t const tilesM = (s.outChannels / p.groups + kTileM - 1) / kTileM;
    dim3 const grid((pixels + kTileN - 1) / kTileN, tilesM * p.groups, s.batch);
    modulatedDeformConvKernel<T><<<grid, kThreads, 0, stream>>>(s, p, static_cast<T const*>(input),
        static_cast<T const*>(offset), static_cast<T const*>(mask), static_cast<T const*>(weight),
        static_cast<T const*>(bias), static_cast<T*>(output), tilesM);
    return cudaGetLastError();
}

} // namespace

cudaError_t launchModulatedDeformConv(Precision precision, Shape const& shape, Params const& params, void const* input,
    void const* offset, void const* mask, void const* weight, void const* bias, void* output, cudaStream_t stream)
{
    switch (precision)
    {
    case Precision::kFLOAT32:
        return launch<float>(shape, params, input, offset, mask, weight, bias, output, stream);
    case Precision::kFLOAT16:
        return launch<__half>(shape, params, input, offset, mask, weight, bias, output, stream);
    }
    return cudaErrorInvalidValue;
}

} // namespace dcn
} // namespace dettool
