/*
 * DettoolBatchedNMS CUDA kernel: one thread block per image, no cap on the number of candidates.
 *
 * 1. The block compacts the image's candidates (score > threshold) into the workspace.
 * 2. Up to K times: every thread sweeps its share of the live candidates, kills those of the
 *    last kept candidate's class that it suppresses, and proposes its best-ranked survivor; a
 *    block-wide reduction picks the next kept candidate.
 * Cost O(K * candidates / threads) per image, memory O(candidates); no sort and no N^2 mask.
 */
#include "batched_nms/batched_nms_kernel.h"

namespace dettool
{
namespace nms
{
namespace
{

constexpr int32_t kThreads = 512;
constexpr int32_t kWarps = kThreads / 32;

size_t alignUp(size_t bytes)
{
    return (bytes + 255) / 256 * 256;
}

//! A candidate proposed for the next kept slot; slot < 0 is "none".
struct Ranked
{
    float score;
    int32_t index;
    int32_t slot;
};

__device__ __forceinline__ Ranked better(Ranked const& a, Ranked const& b)
{
    if (a.slot < 0)
    {
        return b;
    }
    if (b.slot < 0)
    {
        return a;
    }
    return ranksBefore(b.score, b.index, a.score, a.index) ? b : a;
}

__device__ __forceinline__ Ranked warpBest(Ranked r)
{
    for (int32_t offset = 16; offset > 0; offset >>= 1)
    {
        Ranked other;
        other.score = __shfl_down_sync(0xffffffffu, r.score, offset);
        other.index = __shfl_down_sync(0xffffffffu, r.index, offset);
        other.slot = __shfl_down_sync(0xffffffffu, r.slot, offset);
        r = better(r, other);
    }
    return r;
}

__global__ void __launch_bounds__(kThreads) batchedNmsKernel(Shape shape, Params params, float const* boxes,
    float const* scores, int32_t* numDets, float* detBoxes, float* detScores, int32_t* detClasses,
    float* candScores, int32_t* candIndices, uint8_t* alive)
{
    int32_t const b = blockIdx.x;
    int32_t const tid = threadIdx.x;
    int32_t const lane = tid & 31;
    int32_t const warp = tid >> 5;
    int32_t const numClasses = shape.numClasses;
    int64_t const perImage = static_cast<int64_t>(shape.numBoxes) * numClasses;
    int32_t const maxOut = params.maxOutputBoxes;

    float const* imageScores = scores + b * perImage;
    float const* imageBoxes = boxes + b * (shape.boxesPerClass ? perImage : shape.numBoxes) * 4;
    float* imageCandScores = candScores + b * perImage;
    int32_t* imageCandIndices = candIndices + b * perImage;
    uint8_t* imageAlive = alive + b * perImage;

    __shared__ int32_t sCount;
    __shared__ Ranked sWarpBest[kWarps];
    __shared__ Ranked sChosen;

    if (tid == 0)
    {
        sCount = 0;
    }
    __syncthreads();
    for (int64_t i = tid; i < perImage; i += kThreads)
    {
        float const s = imageScores[i];
        if (isCandidate(s, params.scoreThreshold))
        {
            int32_t const slot = atomicAdd(&sCount, 1);
            imageCandScores[slot] = s;
            imageCandIndices[slot] = static_cast<int32_t>(i);
            imageAlive[slot] = 1;
        }
    }
    __syncthreads();
    int32_t const count = sCount;

    Box lastBox{0.0F, 0.0F, 0.0F, 0.0F};
    float lastArea = 0.0F;
    int32_t lastClass = -1;
    int32_t kept = 0;
    for (; kept < maxOut; ++kept)
    {
        Ranked best{0.0F, 0, -1};
        for (int32_t j = tid; j < count; j += kThreads)
        {
            if (!imageAlive[j])
            {
                continue;
            }
            int32_t const index = imageCandIndices[j];
            if (index % numClasses == lastClass)
            {
                Box const box = loadBox(imageBoxes, index, numClasses, shape.boxesPerClass);
                if (suppresses(lastBox, lastArea, box, boxArea(box), params.iouThreshold))
                {
                    imageAlive[j] = 0;
                    continue;
                }
            }
            best = better(best, Ranked{imageCandScores[j], index, j});
        }
        best = warpBest(best);
        if (lane == 0)
        {
            sWarpBest[warp] = best;
        }
        __syncthreads();
        if (warp == 0)
        {
            Ranked r = lane < kWarps ? sWarpBest[lane] : Ranked{0.0F, 0, -1};
            r = warpBest(r);
            if (lane == 0)
            {
                sChosen = r;
            }
        }
        __syncthreads();
        Ranked const chosen = sChosen;
        if (chosen.slot < 0)
        {
            break;
        }
        lastClass = chosen.index % numClasses;
        lastBox = loadBox(imageBoxes, chosen.index, numClasses, shape.boxesPerClass);
        lastArea = boxArea(lastBox);
        if (tid == 0)
        {
            imageAlive[chosen.slot] = 0;
            int64_t const row = static_cast<int64_t>(b) * maxOut + kept;
            detBoxes[row * 4 + 0] = lastBox.x1;
            detBoxes[row * 4 + 1] = lastBox.y1;
            detBoxes[row * 4 + 2] = lastBox.x2;
            detBoxes[row * 4 + 3] = lastBox.y2;
            detScores[row] = chosen.score;
            detClasses[row] = lastClass;
        }
        __syncthreads(); // the kept slot is dead before the next sweep reads it
    }

    for (int32_t k = kept + tid; k < maxOut; k += kThreads)
    {
        int64_t const row = static_cast<int64_t>(b) * maxOut + k;
        detBoxes[row * 4 + 0] = 0.0F;
        detBoxes[row * 4 + 1] = 0.0F;
        detBoxes[row * 4 + 2] = 0.0F;
        detBoxes[row * 4 + 3] = 0.0F;
        detScores[row] = 0.0F;
        detClasses[row] = -1;
    }
    if (tid == 0)
    {
        numDets[b] = kept;
    }
}

} // namespace

size_t workspaceSize(Shape const& shape)
{
    size_t const n = static_cast<size_t>(shape.batch) * shape.numBoxes * shape.numClasses;
    return alignUp(n * sizeof(float)) + alignUp(n * sizeof(int32_t)) + alignUp(n * sizeof(uint8_t));
}

cudaError_t launchBatchedNms(Shape const& shape, Params const& params, float const* boxes, float const* scores,
    int32_t* numDets, float* detBoxes, float* detScores, int32_t* detClasses, void* workspace, cudaStream_t stream)
{
    if (shape.batch <= 0)
    {
        return cudaSuccess;
    }
    size_t const n = static_cast<size_t>(shape.batch) * shape.numBoxes * shape.numClasses;
    auto* base = static_cast<uint8_t*>(workspace);
    auto* candScores = reinterpret_cast<float*>(base);
    auto* candIndices = reinterpret_cast<int32_t*>(base + alignUp(n * sizeof(float)));
    auto* alive = base + alignUp(n * sizeof(float)) + alignUp(n * sizeof(int32_t));
    batchedNmsKernel<<<shape.batch, kThreads, 0, stream>>>(
        shape, params, boxes, scores, numDets, detBoxes, detScores, detClasses, candScores, candIndices, alive);
    return cudaGetLastError();
}

} // namespace nms
} // namespace dettool
