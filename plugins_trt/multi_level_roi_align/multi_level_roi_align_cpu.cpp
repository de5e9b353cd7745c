/*
 * DettoolMultiLevelRoIAlign on the CPU: the kernel's per-element function in a loop.
 */
#include "multi_level_roi_align/multi_level_roi_align_cpu.h"

namespace dettool
{
namespace roialign
{

template <typename T>
void multiLevelRoiAlignCpu(Shape const& shape, Params const& params, float const* rois, T const* const* levels, T* output)
{
    int64_t i = 0;
    for (int32_t r = 0; r < shape.numRois; ++r)
    {
        for (int32_t c = 0; c < shape.channels; ++c)
        {
            for (int32_t ph = 0; ph < params.outputHeight; ++ph)
            {
                for (int32_t pw = 0; pw < params.outputWidth; ++pw)
                {
                    output[i++] = fromFloat<T>(pooledValue(shape, params, rois, levels, r, c, ph, pw));
                }
            }
        }
    }
}

template void multiLevelRoiAlignCpu<float>(Shape const&, Params const&, float const*, float const* const*, float*);
template void multiLevelRoiAlignCpu<Half>(Shape const&, Params const&, float const*, Half const* const*, Half*);

} // namespace roialign
} // namespace dettool
