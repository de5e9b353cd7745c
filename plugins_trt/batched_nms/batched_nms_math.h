/*
 * DettoolBatchedNMS: the per-element math shared by the CUDA kernel and the CPU implementation.
 *
 * Semantics (docs/custom_ops.md): per image, the candidates are the pairs (n, c) with
 * scores[b, n, c] > score_threshold; greedy NMS visits them by decreasing score (ties: smaller
 * flat index n * C + c first) and keeps a candidate unless a kept candidate of the same class
 * overlaps it with IoU > iou_threshold; the first K kept candidates are the output.
 *
 * Both implementations run the same greedy loop: each step suppresses, among the candidates still
 * alive, those of the class of the last kept one that overlap it, and picks the next kept
 * candidate as the best-ranked survivor. No TensorRT types here.
 */
#pragma once

#include "common/host_device.h"

#include <cstdint>
#include <climits>

namespace dettool
{
namespace nms
{

//! Sizes of one call: boxes [B, N, 4] (shared) or [B, N, C, 4] (per class), scores [B, N, C].
struct Shape
{
    int32_t batch{0};
    int32_t numBoxes{0};
    int32_t numClasses{0};
    bool boxesPerClass{false};
};

//! The node's attributes.
struct Params
{
    float scoreThreshold{0.0F};
    float iouThreshold{0.5F};
    int32_t maxOutputBoxes{100}; //!< K
};

//! Why `shape` and `params` are not a valid call, or nullptr.
inline char const* checkShape(Shape const& shape, Params const& params)
{
    if (shape.batch < 0 || shape.numBoxes < 0 || shape.numClasses < 0 || params.maxOutputBoxes < 0)
    {
        return "sizes and max_output_boxes must not be negative";
    }
    if (static_cast<int64_t>(shape.numBoxes) * shape.numClasses > INT32_MAX)
    {
        return "N * C must fit in int32";
    }
    return nullptr;
}

//! xyxy box in input pixels.
struct Box
{
    float x1;
    float y1;
    float x2;
    float y2;
};

//! Area as torchvision's nms computes it: (x2 - x1) * (y2 - y1), no +1.
DETTOOL_HOST_DEVICE DETTOOL_INLINE float boxArea(Box const& b)
{
    return mulRn(subRn(b.x2, b.x1), subRn(b.y2, b.y1));
}

//! True iff kept box `a` suppresses candidate `b`: IoU(a, b) > threshold.
//!
//! torchvision's nms kernel, operation for operation: intersection clamped at 0, union
//! area(a) + area(b) - inter, a float division compared with the float threshold. Two boxes of no
//! area give 0 / 0 = NaN, which is not > threshold (IoU 0, as box_iou's convention).
DETTOOL_HOST_DEVICE DETTOOL_INLINE bool suppresses(
    Box const& a, float areaA, Box const& b, float areaB, float iouThreshold)
{
    float const xx1 = maxOf(a.x1, b.x1);
    float const yy1 = maxOf(a.y1, b.y1);
    float const xx2 = minOf(a.x2, b.x2);
    float const yy2 = minOf(a.y2, b.y2);
    float const w = maxOf(0.0F, subRn(xx2, xx1));
    float const h = maxOf(0.0F, subRn(yy2, yy1));
    float const inter = mulRn(w, h);
    float const iou = inter / subRn(addRn(areaA, areaB), inter);
    return iou > iouThreshold;
}

//! Visiting order: higher score first, ties by smaller flat index n * C + c.
DETTOOL_HOST_DEVICE DETTOOL_INLINE bool ranksBefore(float scoreA, int32_t indexA, float scoreB, int32_t indexB)
{
    return scoreA > scoreB || (scoreA == scoreB && indexA < indexB);
}

//! Whether (n, c) is a candidate: strictly above the threshold (NaN never is).
DETTOOL_HOST_DEVICE DETTOOL_INLINE bool isCandidate(float score, float scoreThreshold)
{
    return score > scoreThreshold;
}

//! Box of candidate `flatIndex` = n * C + c of one image.
//!
//! \param boxes the image's boxes: [N, 4] when shared by the classes, else [N, C, 4].
DETTOOL_HOST_DEVICE DETTOOL_INLINE Box loadBox(
    float const* boxes, int32_t flatIndex, int32_t numClasses, bool boxesPerClass)
{
    int64_t const row = boxesPerClass ? flatIndex : flatIndex / numClasses;
    float const* p = boxes + row * 4;
    return Box{p[0], p[1], p[2], p[3]};
}

} // namespace nms
} // namespace dettool
