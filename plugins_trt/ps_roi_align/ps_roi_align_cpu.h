/*
 * DettoolPSRoIAlign on the CPU: the reference the tests compare with torchvision, built on the
 * math the CUDA kernel runs (ps_roi_align_math.h).
 */
#pragma once

#include "common/precision.h"
#include "ps_roi_align/ps_roi_align_math.h"

namespace dettool
{
namespace psroialign
{

//! Position-sensitive RoIAlign on host memory; T is float or Half. Same arguments as the launcher
//! (the shape already checked).
template <typename T>
void psRoiAlignCpu(Shape const& shape, Params const& params, T const* features, float const* rois, T* output);

extern template void psRoiAlignCpu<float>(Shape const&, Params const&, float const*, float const*, float*);
extern template void psRoiAlignCpu<Half>(Shape const&, Params const&, Half const*, float const*, Half*);

} // namespace psroialign
} // namespace dettool
