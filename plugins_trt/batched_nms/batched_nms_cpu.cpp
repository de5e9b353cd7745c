/*
 * DettoolBatchedNMS on the CPU. The loop is the CUDA kernel's, run by one thread: compact the
 * candidates, then up to K sweeps that suppress by the last kept candidate and pick the
 * best-ranked survivor.
 */
#include "batched_nms/batched_nms_cpu.h"

#include <vector>

namespace dettool
{
namespace nms
{

void batchedNmsCpu(Shape const& shape, Params const& params, float const* boxes, float const* scores,
    int32_t* numDets, float* detBoxes, float* detScores, int32_t* detClasses)
{
    int32_t const numClasses = shape.numClasses;
    int64_t const perImage = static_cast<int64_t>(shape.numBoxes) * numClasses;
    int32_t const maxOut = params.maxOutputBoxes;
    std::vector<float> candScores;
    std::vector<int32_t> candIndices;
    std::vector<uint8_t> alive;

    for (int32_t b = 0; b < shape.batch; ++b)
    {
        float const* imageScores = scores + b * perImage;
        float const* imageBoxes = boxes + b * (shape.boxesPerClass ? perImage : shape.numBoxes) * 4;

        candScores.clear();
        candIndices.clear();
        for (int64_t i = 0; i < perImage; ++i)
        {
            if (isCandidate(imageScores[i], params.scoreThreshold))
            {
                candScores.push_back(imageScores[i]);
                candIndices.push_back(static_cast<int32_t>(i));
            }
        }
        auto const count = static_cast<int32_t>(candScores.size());
        alive.assign(count, 1);

        Box lastBox{0.0F, 0.0F, 0.0F, 0.0F};
        float lastArea = 0.0F;
        int32_t lastClass = -1;
        int32_t kept = 0;
        for (; kept < maxOut; ++kept)
        {
            int32_t best = -1;
            for (int32_t j = 0; j < count; ++j)
            {
                if (!alive[j])
                {
                    continue;
                }
                int32_t const index = candIndices[j];
                if (index % numClasses == lastClass)
                {
                    Box const box = loadBox(imageBoxes, index, numClasses, shape.boxesPerClass);
                    if (suppresses(lastBox, lastArea, box, boxArea(box), params.iouThreshold))
                    {
                        alive[j] = 0;
                        continue;
                    }
                }
                if (best < 0 || ranksBefore(candScores[j], index, candScores[best], candIndices[best]))
                {
                    best = j;
                }
            }
            if (best < 0)
            {
                break;
            }
            alive[best] = 0;
            lastClass = candIndices[best] % numClasses;
            lastBox = loadBox(imageBoxes, candIndices[best], numClasses, shape.boxesPerClass);
            lastArea = boxArea(lastBox);
            int64_t const row = static_cast<int64_t>(b) * maxOut + kept;
            detBoxes[row * 4 + 0] = lastBox.x1;
            detBoxes[row * 4 + 1] = lastBox.y1;
            detBoxes[row * 4 + 2] = lastBox.x2;
            detBoxes[row * 4 + 3] = lastBox.y2;
            detScores[row] = candScores[best];
            detClasses[row] = lastClass;
        }
        for (int32_t k = kept; k < maxOut; ++k)
        {
            int64_t const row = static_cast<int64_t>(b) * maxOut + k;
            for (int32_t e = 0; e < 4; ++e)
            {
                detBoxes[row * 4 + e] = 0.0F;
            }
            detScores[row] = 0.0F;
            detClasses[row] = -1;
        }
        numDets[b] = kept;
    }
}

} // namespace nms
} // namespace dettool
