/*
 * C ABI of the CPU implementations: argument checks, then the templated implementations.
 */
#include "common/cpu_ops_api.h"

#include "batched_nms/batched_nms_cpu.h"
#include "modulated_deform_conv/modulated_deform_conv_cpu.h"
#include "multi_level_roi_align/multi_level_roi_align_cpu.h"
#include "ps_roi_align/ps_roi_align_cpu.h"

#include <string>

namespace
{

thread_local std::string tLastError;

int32_t fail(char const* message)
{
    tLastError = message;
    return -1;
}

int32_t succeed()
{
    tLastError.clear();
    return 0;
}

} // namespace

extern "C" {

char const* dettool_cpu_last_error(void)
{
    return tLastError.c_str();
}

int32_t dettool_cpu_batched_nms(float const* boxes, float const* scores, int32_t batch, int32_t num_boxes,
    int32_t num_classes, int32_t boxes_per_class, float score_threshold, float iou_threshold,
    int32_t max_output_boxes, int32_t* num_dets, float* det_boxes, float* det_scores, int32_t* det_classes)
{
    using namespace dettool::nms;
    Shape const shape{batch, num_boxes, num_classes, boxes_per_class != 0};
    Params const params{score_threshold, iou_threshold, max_output_boxes};
    if (char const* error = checkShape(shape, params))
    {
        return fail(error);
    }
    batchedNmsCpu(shape, params, boxes, scores, num_dets, det_boxes, det_scores, det_classes);
    return succeed();
}

int32_t dettool_cpu_multi_level_roi_align(int32_t dtype, float const* rois, int32_t num_rois,
    void const* const* levels, int32_t const* heights, int32_t const* widths, int32_t const* featmap_strides,
    int32_t num_levels, int32_t batch, int32_t channels, int32_t output_height, int32_t output_width,
    int32_t sampling_ratio, int32_t finest_scale, int32_t aligned, float roi_scale_factor, void* output)
{
    using namespace dettool::roialign;
    if (num_levels < 1 || num_levels > kMaxLevels)
    {
        return fail("the number of feature levels must be in [1, 8]");
    }
    if (num_rois < 0 || batch < 0 || channels < 0)
    {
        return fail("sizes must not be negative");
    }
    Shape shape;
    shape.numRois = num_rois;
    shape.batch = batch;
    shape.channels = channels;
    Params params;
    params.outputHeight = output_height;
    params.outputWidth = output_width;
    params.samplingRatio = sampling_ratio;
    params.finestScale = finest_scale;
    params.aligned = aligned != 0;
    params.roiScaleFactor = roi_scale_factor;
    params.numLevels = num_levels;
    for (int32_t l = 0; l < num_levels; ++l)
    {
        if (featmap_strides[l] < 1)
        {
            return fail("featmap_strides must be >= 1");
        }
        shape.height[l] = heights[l];
        shape.width[l] = widths[l];
        params.spatialScale[l] = spatialScaleOf(featmap_strides[l]);
    }
    if (char const* error = checkShape(shape, params))
    {
        return fail(error);
    }
    switch (dtype)
    {
    case 0:
        multiLevelRoiAlignCpu(shape, params, rois, reinterpret_cast<float const* const*>(levels),
            static_cast<float*>(output));
        return succeed();
    case 1:
        multiLevelRoiAlignCpu(shape, params, rois, reinterpret_cast<dettool::Half const* const*>(levels),
            static_cast<dettool::Half*>(output));
        return succeed();
    default: return fail("dtype must be 0 (float32) or 1 (float16)");
    }
}

int32_t dettool_cpu_modulated_deform_conv(int32_t dtype, void const* input, void const* offset, void const* mask,
    void const* weight, void const* bias, int32_t batch, int32_t channels, int32_t height, int32_t width,
    int32_t out_channels, int32_t kernel_h, int32_t kernel_w, int32_t stride_h, int32_t stride_w, int32_t pad_h,
    int32_t pad_w, int32_t dilation_h, int32_t dilation_w, int32_t groups, int32_t deform_groups, void* output)
{
    using namespace dettool::dcn;
    Params const params{stride_h, stride_w, pad_h, pad_w, dilation_h, dilation_w, groups, deform_groups};
    if (batch < 0 || out_channels < 0)
    {
        return fail("sizes must not be negative");
    }
    Shape shape{batch, channels, height, width, out_channels, kernel_h, kernel_w, 0, 0};
    if (outputSizeValid(height, pad_h, dilation_h, kernel_h, stride_h)
        && outputSizeValid(width, pad_w, dilation_w, kernel_w, stride_w))
    {
        shape.outHeight = outputSize(height, pad_h, dilation_h, kernel_h, stride_h);
        shape.outWidth = outputSize(width, pad_w, dilation_w, kernel_w, stride_w);
    }
    if (char const* error = checkShape(shape, params))
    {
        return fail(error);
    }
    switch (dtype)
    {
    case 0:
        modulatedDeformConvCpu(shape, params, static_cast<float const*>(input), static_cast<float const*>(offset),
            static_cast<float const*>(mask), static_cast<float const*>(weight), static_cast<float const*>(bias),
            static_cast<float*>(output));
        return succeed();
    case 1:
        modulatedDeformConvCpu(shape, params, static_cast<dettool::Half const*>(input),
            static_cast<dettool::Half const*>(offset), static_cast<dettool::Half const*>(mask),
            static_cast<dettool::Half const*>(weight), static_cast<dettool::Half const*>(bias),
            static_cast<dettool::Half*>(output));
        return succeed();
    default: return fail("dtype must be 0 (float32) or 1 (float16)");
    }
}

int32_t dettool_cpu_ps_roi_align(int32_t dtype, void const* features, float const* rois, int32_t num_rois,
    int32_t batch, int32_t channels, int32_t height, int32_t width, int32_t output_size, float spatial_scale,
    int32_t sampling_ratio, void* output)
{
    using namespace dettool::psroialign;
    Shape const shape{num_rois, batch, channels, height, width};
    Params params;
    params.outputSize = output_size;
    params.spatialScale = spatial_scale;
    params.samplingRatio = sampling_ratio;
    if (char const* error = checkShape(shape, params))
    {
        return fail(error);
    }
    switch (dtype)
    {
    case 0:
        psRoiAlignCpu(shape, params, static_cast<float const*>(features), rois, static_cast<float*>(output));
        return succeed();
    case 1:
        psRoiAlignCpu(shape, params, static_cast<dettool::Half const*>(features), rois,
            static_cast<dettool::Half*>(output));
        return succeed();
    default: return fail("dtype must be 0 (float32) or 1 (float16)");
    }
}

void dettool_cpu_float_to_half(float const* input, uint16_t* output, int64_t count)
{
    for (int64_t i = 0; i < count; ++i)
    {
        output[i] = dettool::floatToHalfBits(input[i]);
    }
}

void dettool_cpu_half_to_float(uint16_t const* input, float* output, int64_t count)
{
    for (int64_t i = 0; i < count; ++i)
    {
        output[i] = dettool::halfBitsToFloat(input[i]);
    }
}

} // extern "C"
