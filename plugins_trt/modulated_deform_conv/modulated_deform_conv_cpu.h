/*
 * DettoolModulatedDeformConv on the CPU: the reference the tests compare with torchvision, built
 * on the math the CUDA kernel runs (modulated_deform_conv_math.h).
 */
#pragma once

#include "common/precision.h"
#include "modulated_deform_conv/modulated_deform_conv_math.h"

namespace dettool
{
namespace dcn
{

//! Modulated deformable convolution on host memory; T is float or Half. Same arguments as the
//! launcher (the caller has validated the shapes).
template <typename T>
void modulatedDeformConvCpu(Shape const& shape, Params const& params, T const* input, T const* offset, T const* mask,
    T const* weight, T const* bias, T* output);

extern template void modulatedDeformConvCpu<float>(Shape const&, Params const&, float const*, float const*,
    float const*, float const*, float const*, float*);
extern template void modulatedDeformConvCpu<Half>(
    Shape const&, Params const&, Half const*, Half const*, Half const*, Half const*, Half const*, Half*);

} // namespace dcn
} // namespace dettool
