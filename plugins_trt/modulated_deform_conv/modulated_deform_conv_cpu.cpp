/*
 * DettoolModulatedDeformConv on the CPU: the column matrix of one (image, group) from the
 * kernel's columnValue, then the product with the weights summed in k order, as the kernel does.
 */
#include "modulated_deform_conv/modulated_deform_conv_cpu.h"

#include <algorithm>
#include <vector>

namespace dettool
{
namespace dcn
{

template <typename T>
void modulatedDeformConvCpu(Shape const& s, Params const& p, T const* input, T const* offset, T const* mask,
    T const* weight, T const* bias, T* output)
{
    int32_t const outPerGroup = s.outChannels / p.groups;
    int32_t const inPerGroup = s.channels / p.groups;
    int32_t const taps = s.kernelH * s.kernelW;
    int32_t const depth = inPerGroup * taps;
    int64_t const pixels = static_cast<int64_t>(s.outHeight) * s.outWidth;
    std::vector<float> columns(static_cast<size_t>(depth * pixels));
    std::vector<float> acc(static_cast<size_t>(pixels));

    for (int32_t b = 0; b < s.batch; ++b)
    {
        for (int32_t g = 0; g < p.groups; ++g)
        {
            for (int32_t k = 0; k < depth; ++k)
            {
                for (int64_t q = 0; q < pixels; ++q)
                {
                    columns[k * pixels + q] = columnValue(s, p, input, offset, mask, b, g * inPerGroup + k / taps,
                        k % taps, static_cast<int32_t>(q / s.outWidth), static_cast<int32_t>(q % s.outWidth));
                }
            }
            for (int32_t co = 0; co < outPerGroup; ++co)
            {
                int32_t const outChannel = g * outPerGroup + co;
                T const* w = weight + static_cast<int64_t>(outChannel) * depth;
                std::fill(acc.begin(), acc.end(), 0.0F);
                for (int32_t k = 0; k < depth; ++k)
                {
                    float const wk = toFloat(w[k]);
                    float const* column = columns.data() + k * pixels;
                    for (int64_t q = 0; q < pixels; ++q)
                    {
                        acc[q] += wk * column[q];
                    }
                }
                float const bv = toFloat(bias[outChannel]);
                T* row = output + (static_cast<int64_t>(b) * s.outChannels + outChannel) * pixels;
                for (int64_t q = 0; q < pixels; ++q)
                {
                    row[q] = fromFloat<T>(acc[q] + bv);
                }
            }
        }
    }
}

template void modulatedDeformConvCpu<float>(
    Shape const&, Params const&, float const*, float const*, float const*, float const*, float const*, float*);
template void modulatedDeformConvCpu<Half>(
    Shape const&, Params const&, Half const*, Half const*, Half const*, Half const*, Half const*, Half*);

} // namespace dcn
} // namespace dettool
