/*
 * DettoolMultiLevelRoIAlign CUDA launcher. Plain pointers and sizes; no TensorRT types.
 */
#pragma once

#include "common/precision.h"
#include "multi_level_roi_align/multi_level_roi_align_math.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace dettool
{
namespace roialign
{

//! Pool every RoI from its FPN level on `stream`; one thread per output element. No workspace.
//!
//! \param precision type of the features and the output (float32 or float16 = __half)
//! \param rois      float32 [R, 5] (batch_index, x1, y1, x2, y2)
//! \param levels    host array of params.numLevels device pointers, level l [B, C, H_l, W_l]
//! \param output    [R, C, outputHeight, outputWidth]
//! \return the launch status (cudaErrorInvalidValue for more than kMaxLevels levels)
cudaError_t launchMultiLevelRoiAlign(Precision precision, Shape const& shape, Params const& params, float const* rois,
    void const* const* levels, void* output, cudaStream_t stream);

} // namespace roialign
} // namespace dettool
