/*
 * DettoolMultiLevelRoIAlign on the CPU: the reference the tests compare with torchvision, built
 * on the math the CUDA kernel runs (multi_level_roi_align_math.h).
 */
#pragma once

#include "common/precision.h"
#include "multi_level_roi_align/multi_level_roi_align_math.h"

namespace dettool
{
namespace roialign
{

//! Multi-level RoIAlign on host memory; T is float or Half. Same arguments as the launcher.
template <typename T>
void multiLevelRoiAlignCpu(Shape const& shape, Params const& params, float const* rois, T const* const* levels, T* output);

extern template void multiLevelRoiAlignCpu<float>(Shape const&, Params const&, float const*, float const* const*, float*);
extern template void multiLevelRoiAlignCpu<Half>(Shape const&, Params const&, float const*, Half const* const*, Half*);

} // namespace roialign
} // namespace dettool
