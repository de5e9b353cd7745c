/*
 * Element types of the tensors the kernels read and write, and their conversion to the float32
 * in which every computation is done.
 *
 * On the GPU, float16 is CUDA's __half. On the CPU (no CUDA headers needed) it is dettool::Half,
 * 16 bits converted with round-to-nearest-even, so the CPU implementations can take the same
 * float16 inputs as the kernels.
 */
#pragma once

#include "common/host_device.h"

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace dettool
{

//! Element type of a feature tensor, as launchers and the C API take it.
enum class Precision : int32_t
{
    kFLOAT32 = 0,
    kFLOAT16 = 1,
};

//! IEEE binary16 storage for the CPU implementations.
struct Half
{
    uint16_t bits;
};

//! float -> binary16 bits, round to nearest even; overflow gives inf, NaN a quiet NaN.
inline uint16_t floatToHalfBits(float value)
{
    uint32_t u;
    std::memcpy(&u, &value, sizeof(u));
    uint32_t const sign = u & 0x80000000u;
    u ^= sign;
    uint16_t out;
    if (u >= (127u + 16u) << 23) // |value| >= 65536, inf or NaN
    {
        out = (u > 0x7f800000u) ? 0x7e00u : 0x7c00u;
    }
    else if (u < (113u << 23)) // below 2^-14: a subnormal half or zero
    {
        // Adding 0.5 aligns the 10 mantissa bits at the bottom; the float addition rounds to
        // nearest even.
        uint32_t const magicBits = ((127u - 15u) + (23u - 10u) + 1u) << 23;
        float magic;
        std::memcpy(&magic, &magicBits, sizeof(magic));
        float f;
        std::memcpy(&f, &u, sizeof(f));
        f += magic;
        std::memcpy(&u, &f, sizeof(u));
        out = static_cast<uint16_t>(u - magicBits);
    }
    else
    {
        uint32_t const mantissaOdd = (u >> 13) & 1u;
        u += (static_cast<uint32_t>(15 - 127) << 23) + 0xfffu; // rebias; round half up ...
        u += mantissaOdd;                                       // ... or to even
        out = static_cast<uint16_t>(u >> 13); // a carry out of the mantissa gives inf correctly
    }
    return static_cast<uint16_t>(out | (sign >> 16));
}

//! binary16 bits -> float (exact).
inline float halfBitsToFloat(uint16_t bits)
{
    uint32_t const shiftedExp = 0x7c00u << 13;
    uint32_t u = (static_cast<uint32_t>(bits) & 0x7fffu) << 13;
    uint32_t const exp = shiftedExp & u;
    u += (127u - 15u) << 23;
    if (exp == shiftedExp) // inf or NaN
    {
        u += (128u - 16u) << 23;
    }
    else if (exp == 0) // zero or subnormal: renormalise
    {
        u += 1u << 23;
        float f;
        std::memcpy(&f, &u, sizeof(f));
        float const magic = 6.103515625e-05F; // 2^-14
        f -= magic;
        std::memcpy(&u, &f, sizeof(u));
    }
    u |= (static_cast<uint32_t>(bits) & 0x8000u) << 16;
    float out;
    std::memcpy(&out, &u, sizeof(out));
    return out;
}

DETTOOL_HOST_DEVICE DETTOOL_INLINE float toFloat(float value)
{
    return value;
}

inline float toFloat(Half value)
{
    return halfBitsToFloat(value.bits);
}

#if defined(__CUDACC__)
DETTOOL_HOST_DEVICE DETTOOL_INLINE float toFloat(__half value)
{
    return __half2float(value);
}
#endif

//! Conversion from float32 to each element type (float16 rounds to nearest even).
template <typename T>
struct FromFloat;

template <>
struct FromFloat<float>
{
    DETTOOL_HOST_DEVICE DETTOOL_INLINE static float convert(float value)
    {
        return value;
    }
};

template <>
struct FromFloat<Half>
{
    static Half convert(float value)
    {
        return Half{floatToHalfBits(value)};
    }
};

#if defined(__CUDACC__)
template <>
struct FromFloat<__half>
{
    DETTOOL_HOST_DEVICE DETTOOL_INLINE static __half convert(float value)
    {
        return __float2half_rn(value);
    }
};
#endif

//! The element type T that holds `value`.
template <typename T>
DETTOOL_HOST_DEVICE DETTOOL_INLINE T fromFloat(float value)
{
    return FromFloat<T>::convert(value);
}

} // namespace dettool
