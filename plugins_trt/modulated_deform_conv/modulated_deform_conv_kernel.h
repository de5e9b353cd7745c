/*
 * DettoolModulatedDeformConv CUDA launcher. Plain pointers and sizes; no TensorRT types.
 */
#pragma once

#include "common/precision.h"
#include "modulated_deform_conv/modulated_deform_conv_math.h"

#include <cuda_runtime_api.h>

namespace dettool
{
namespace dcn
{

//! Modulated deformable convolution on `stream`: an implicit GEMM whose column tiles are sampled
//! on the fly (no im2col buffer, no workspace, no cuBLAS).
//!
//! \param precision type of every tensor (float32, or float16 = __half); math in float32
//! \param input  [B, C, H, W]
//! \param offset [B, 2 * G * kH * kW, Ho, Wo]
//! \param mask   [B, G * kH * kW, Ho, Wo]
//! \param weight [Co, C / groups, kH, kW]
//! \param bias   [Co]
//! \param output [B, Co, Ho, Wo]
cudaError_t launchModulatedDeformConv(Precision precision, Shape const& shape, Params const& params, void const* input,
    void const* offset, void const* mask, void const* weight, void const* bias, void* output, cudaStream_t stream);

} // namespace dcn
} // namespace dettool
