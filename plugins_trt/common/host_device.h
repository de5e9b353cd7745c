/*
 * Qualifiers and arithmetic shared by the CUDA kernels and the CPU implementations.
 *
 * The per-element math of every plugin lives in `<plugin>_math.h` as functions marked
 * DETTOOL_HOST_DEVICE; nvcc compiles them for the GPU, a plain C++ compiler (no CUDA) compiles
 * them for the CPU implementation that the Python tests compare with torchvision.
 */
#pragma once

#if defined(__CUDACC__)
#define DETTOOL_HOST_DEVICE __host__ __device__
#define DETTOOL_INLINE __forceinline__
#else
#define DETTOOL_HOST_DEVICE
#define DETTOOL_INLINE inline
#endif

namespace dettool
{

// Products and sums whose rounding decides a comparison (IoU > threshold, FPN level, sampling
// positions) use these: nvcc never contracts __fmul_rn / __fadd_rn into an FMA, so the GPU
// computes exactly what the CPU (built with -ffp-contract=off) computes.
DETTOOL_HOST_DEVICE DETTOOL_INLINE float mulRn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fmul_rn(a, b);
#else
    return a * b;
#endif
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE float addRn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fadd_rn(a, b);
#else
    return a + b;
#endif
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE float subRn(float a, float b)
{
#if defined(__CUDA_ARCH__)
    return __fsub_rn(a, b);
#else
    return a - b;
#endif
}

// std::max / std::min semantics (the first argument wins ties and NaN comparisons), as in
// torchvision's kernels; fmaxf would treat NaN differently.
DETTOOL_HOST_DEVICE DETTOOL_INLINE float maxOf(float a, float b)
{
    return (a < b) ? b : a;
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE float minOf(float a, float b)
{
    return (b < a) ? b : a;
}

} // namespace dettool
