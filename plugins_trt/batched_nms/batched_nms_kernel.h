/*
 * DettoolBatchedNMS CUDA launcher. Plain pointers and sizes; no TensorRT types.
 */
#pragma once

#include "batched_nms/batched_nms_math.h"

#include <cstddef>
#include <cstdint>
#include <cuda_runtime_api.h>

namespace dettool
{
namespace nms
{

//! Bytes of device workspace batchedNmsLaunch needs (candidate lists of every image).
size_t workspaceSize(Shape const& shape);

//! Run batched NMS on `stream`; one thread block per image.
//!
//! \param boxes     float32 [B, N, 4] or [B, N, C, 4] (shape.boxesPerClass)
//! \param scores    float32 [B, N, C]
//! \param numDets   int32 [B] out
//! \param detBoxes  float32 [B, K, 4] out; rows >= numDets are 0
//! \param detScores float32 [B, K] out; rows >= numDets are 0
//! \param detClasses int32 [B, K] out; rows >= numDets are -1
//! \param workspace workspaceSize(shape) bytes of device memory, 256-byte aligned
//! \return the launch status
cudaError_t launchBatchedNms(Shape const& shape, Params const& params, float const* boxes, float const* scores,
    int32_t* numDets, float* detBoxes, float* detScores, int32_t* detClasses, void* workspace, cudaStream_t stream);

} // namespace nms
} // namespace dettool
