/*
 * C ABI of the CPU implementations (libdettool_cpu_ops.so), for ctypes in the Python tests and for
 * anyone who wants the plugins' exact semantics on the CPU. Every tensor is contiguous, row-major.
 * dtype: 0 = float32, 1 = float16 (IEEE binary16 bits). Functions return 0 on success, else -1
 * with dettool_cpu_last_error() saying why.
 */
#pragma once

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DETTOOL_CPU_API __attribute__((visibility("default")))

//! Why the last call on this thread failed ("" when it did not).
DETTOOL_CPU_API char const* dettool_cpu_last_error(void);

//! DettoolBatchedNMS. boxes [B, N, 4] (boxes_per_class = 0) or [B, N, C, 4] (1), scores [B, N, C];
//! outputs num_dets [B] int32, det_boxes [B, K, 4], det_scores [B, K], det_classes [B, K] int32.
DETTOOL_CPU_API int32_t dettool_cpu_batched_nms(float const* boxes, float const* scores, int32_t batch,
    int32_t num_boxes, int32_t num_classes, int32_t boxes_per_class, float score_threshold, float iou_threshold,
    int32_t max_output_boxes, int32_t* num_dets, float* det_boxes, float* det_scores, int32_t* det_classes);

//! DettoolMultiLevelRoIAlign. rois [R, 5] float32; levels: num_levels pointers to [B, C, H_l, W_l]
//! of `dtype`; output [R, C, output_height, output_width] of `dtype`. roi_scale_factor 1: no
//! rescaling.
DETTOOL_CPU_API int32_t dettool_cpu_multi_level_roi_align(int32_t dtype, float const* rois, int32_t num_rois,
    void const* const* levels, int32_t const* heights, int32_t const* widths, int32_t const* featmap_strides,
    int32_t num_levels, int32_t batch, int32_t channels, int32_t output_height, int32_t output_width,
    int32_t sampling_ratio, int32_t finest_scale, int32_t aligned, float roi_scale_factor, void* output);

//! DettoolModulatedDeformConv. input [B, C, H, W], offset [B, 2 G kH kW, Ho, Wo], mask
//! [B, G kH kW, Ho, Wo], weight [Co, C / groups, kH, kW], bias [Co], output [B, Co, Ho, Wo], all
//! of `dtype`; Ho, Wo follow from the sizes and attributes.
DETTOOL_CPU_API int32_t dettool_cpu_modulated_deform_conv(int32_t dtype, void const* input, void const* offset,
    void const* mask, void const* weight, void const* bias, int32_t batch, int32_t channels, int32_t height,
    int32_t width, int32_t out_channels, int32_t kernel_h, int32_t kernel_w, int32_t stride_h, int32_t stride_w,
    int32_t pad_h, int32_t pad_w, int32_t dilation_h, int32_t dilation_w, int32_t groups, int32_t deform_groups,
    void* output);

//! DettoolPSRoIAlign. features [B, channels, H, W] of `dtype` (channels = C * k * k, k =
//! output_size); rois [R, 5] float32; output [R, C, k, k] of `dtype`.
DETTOOL_CPU_API int32_t dettool_cpu_ps_roi_align(int32_t dtype, void const* features, float const* rois,
    int32_t num_rois, int32_t batch, int32_t channels, int32_t height, int32_t width, int32_t output_size,
    float spatial_scale, int32_t sampling_ratio, void* output);

//! The float <-> float16 conversions the CPU implementations use (round to nearest even).
DETTOOL_CPU_API void dettool_cpu_float_to_half(float const* input, uint16_t* output, int64_t count);
DETTOOL_CPU_API void dettool_cpu_half_to_float(uint16_t const* input, float* output, int64_t count);

#ifdef __cplusplus
}
#endif
