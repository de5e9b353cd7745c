/*
 * DettoolPSRoIAlign on the CPU: the kernel's per-element function in a loop.
 */
#include "ps_roi_align/ps_roi_align_cpu.h"

namespace dettool
{
namespace psroialign
{

template <typename T>
void psRoiAlignCpu(Shape const& shape, Params const& params, T const* features, float const* rois, T* output)
{
    int32_t const channelsOut = outputChannels(shape, params);
    int32_t const k = params.outputSize;
    int64_t i = 0;
    for (int32_t r = 0; r < shape.numRois; ++r)
    {
        for (int32_t c = 0; c < channelsOut; ++c)
        {
            for (int32_t ph = 0; ph < k; ++ph)
            {
                for (int32_t pw = 0; pw < k; ++pw)
                {
                    output[i++] = fromFloat<T>(pooledValue(shape, params, features, rois, r, c, ph, pw));
                }
            }
        }
    }
}

template void psRoiAlignCpu<float>(Shape const&, Params const&, float const*, float const*, float*);
template void psRoiAlignCpu<Half>(Shape const&, Params const&, Half const*, float const*, Half*);

} // namespace psroialign
} // namespace dettool
