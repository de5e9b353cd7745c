/*
 * DettoolPSRoIAlign CUDA launcher. Plain pointers and sizes; no TensorRT types.
 */
#pragma once

#include "common/precision.h"
#include "ps_roi_align/ps_roi_align_math.h"

#include <cstdint>
#include <cuda_runtime_api.h>

namespace dettool
{
namespace psroialign
{

//! Pool every RoI's bins from their input channels on `stream`; one thread per output element. No
//! workspace.
//!
//! \param precision type of the features and the output (float32 or float16 = __half)
//! \param features  [B, C * k * k, H, W]
//! \param rois      float32 [R, 5] (batch_index, x1, y1, x2, y2)
//! \param output    [R, C, k, k]
//! \return the launch status (cudaErrorInvalidValue for a shape checkShape rejects)
cudaError_t launchPsRoiAlign(Precision precision, Shape const& shape, Params const& params, void const* features,
    float const* rois, void* output, cudaStream_t stream);

} // namespace psroialign
} // namespace dettool
