/*
 * DettoolBatchedNMS on the CPU: the reference the tests compare with torchvision, built on the
 * math the CUDA kernel runs (batched_nms_math.h).
 */
#pragma once

#include "batched_nms/batched_nms_math.h"

#include <cstdint>

namespace dettool
{
namespace nms
{

//! Batched NMS on host memory; same arguments and outputs as launchBatchedNms.
void batchedNmsCpu(Shape const& shape, Params const& params, float const* boxes, float const* scores,
    int32_t* numDets, float* detBoxes, float* detScores, int32_t* detClasses);

} // namespace nms
} // namespace dettool
