/*
 * DettoolBatchedNMS TensorRT plugin.
 *
 * Inputs: boxes float32 [B, N, 4] or [B, N, C, 4], scores float32 [B, N, C].
 * Outputs: num_dets int32 [B], det_boxes float32 [B, K, 4], det_scores float32 [B, K],
 * det_classes int32 [B, K]. Semantics: docs/custom_ops.md; kernel: batched_nms_kernel.cu.
 */
#include "batched_nms/batched_nms_plugin.h"

#include "batched_nms/batched_nms_kernel.h"

#include <stdexcept>

using namespace nvinfer1;

namespace dettool
{
namespace plugin
{
namespace
{
constexpr int32_t kNbInputs = 2;
constexpr int32_t kNbOutputs = 4;
} // namespace

FieldNames& BatchedNmsPlugin::fieldNames()
{
    static FieldNames names{
        PluginField("score_threshold", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("iou_threshold", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("max_output_boxes", nullptr, PluginFieldType::kINT32, 1),
    };
    return names;
}

BatchedNmsPlugin* BatchedNmsPlugin::create(PluginFieldCollection const* fc)
{
    Attributes const attrs(fc);
    nms::Params params;
    params.scoreThreshold = attrs.requireFloat("score_threshold");
    params.iouThreshold = attrs.requireFloat("iou_threshold");
    params.maxOutputBoxes = attrs.requireInt("max_output_boxes");
    if (params.maxOutputBoxes < 0)
    {
        throw std::invalid_argument("max_output_boxes must not be negative");
    }
    return new BatchedNmsPlugin(params);
}

BatchedNmsPlugin::BatchedNmsPlugin(nms::Params const& params)
    : mParams(params)
{
}

int32_t BatchedNmsPlugin::getNbOutputs() const noexcept
{
    return kNbOutputs;
}

int32_t BatchedNmsPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* /*inputTypes*/, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return -1;
    }
    outputTypes[0] = DataType::kINT32; // num_dets
    outputTypes[1] = DataType::kFLOAT; // det_boxes
    outputTypes[2] = DataType::kFLOAT; // det_scores
    outputTypes[3] = DataType::kINT32; // det_classes
    return 0;
}

int32_t BatchedNmsPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || inputs[1].nbDims != 3
        || (inputs[0].nbDims != 3 && inputs[0].nbDims != 4))
    {
        logError(std::string(kNAME) + ": expects boxes [B, N, 4] or [B, N, C, 4] and scores [B, N, C]");
        return -1;
    }
    IDimensionExpr const* batch = inputs[1].d[0];
    IDimensionExpr const* k = exprBuilder.constant(mParams.maxOutputBoxes);
    outputs[0].nbDims = 1;
    outputs[0].d[0] = batch;
    outputs[1].nbDims = 3;
    outputs[1].d[0] = batch;
    outputs[1].d[1] = k;
    outputs[1].d[2] = exprBuilder.constant(4);
    for (int32_t i : {2, 3})
    {
        outputs[i].nbDims = 2;
        outputs[i].d[0] = batch;
        outputs[i].d[1] = k;
    }
    return 0;
}

bool BatchedNmsPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs || pos < 0 || pos >= kNbInputs + kNbOutputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    // boxes, scores, num_dets, det_boxes, det_scores, det_classes
    static constexpr DataType kTypes[] = {
        DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32, DataType::kFLOAT, DataType::kFLOAT, DataType::kINT32};
    return desc.type == kTypes[pos];
}

std::string BatchedNmsPlugin::shapeOf(Dims const& boxes, Dims const& scores, nms::Shape& shape)
{
    if (scores.nbDims != 3 || (boxes.nbDims != 3 && boxes.nbDims != 4))
    {
        return "boxes must be [B, N, 4] or [B, N, C, 4] and scores [B, N, C]";
    }
    shape.batch = static_cast<int32_t>(scores.d[0]);
    shape.numBoxes = static_cast<int32_t>(scores.d[1]);
    shape.numClasses = static_cast<int32_t>(scores.d[2]);
    shape.boxesPerClass = boxes.nbDims == 4;
    bool const consistent = boxes.d[0] == scores.d[0] && boxes.d[1] == scores.d[1] && boxes.d[boxes.nbDims - 1] == 4
        && (!shape.boxesPerClass || boxes.d[2] == scores.d[2]);
    if (!consistent)
    {
        return "boxes " + toString(boxes) + " do not fit scores " + toString(scores);
    }
    char const* error = nms::checkShape(shape, nms::Params{0.0F, 0.0F, 0});
    return error ? error : "";
}

int32_t BatchedNmsPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != kNbOutputs)
    {
        return -1;
    }
    Dims const& boxes = in[0].desc.dims;
    if ((boxes.nbDims != 3 && boxes.nbDims != 4) || in[1].desc.dims.nbDims != 3
        || (boxes.d[boxes.nbDims - 1] != 4 && boxes.d[boxes.nbDims - 1] != -1))
    {
        logError(std::string(kNAME) + ": boxes must be [B, N, 4] or [B, N, C, 4], not " + toString(boxes));
        return -1;
    }
    nms::Shape largest;
    if (!largestShape(in[1].max, largest))
    {
        // getWorkspaceSize could only answer 0 and enqueue would have no memory to work in.
        logError(std::string(kNAME) + ": the optimization profile gives no maximum shape of scores (max "
            + toString(in[1].max) + "), so the workspace cannot be sized; give every dimension of the "
            + "NMS inputs a maximum in the profile");
        return -1;
    }
    return 0;
}

bool BatchedNmsPlugin::largestShape(Dims const& maxScores, nms::Shape& shape)
{
    if (maxScores.nbDims != 3 || maxScores.d[0] < 0 || maxScores.d[1] < 0 || maxScores.d[2] < 0)
    {
        return false;
    }
    shape.batch = static_cast<int32_t>(maxScores.d[0]);
    shape.numBoxes = static_cast<int32_t>(maxScores.d[1]);
    shape.numClasses = static_cast<int32_t>(maxScores.d[2]);
    return true;
}

size_t BatchedNmsPlugin::getWorkspaceSize(
    DynamicPluginTensorDesc const* inputs, int32_t nbInputs, DynamicPluginTensorDesc const* /*outputs*/,
    int32_t /*nbOutputs*/) const noexcept
{
    nms::Shape largest; // of the profile; configurePlugin has refused a profile without one
    if (nbInputs != kNbInputs || !largestShape(inputs[1].max, largest))
    {
        logError(std::string(kNAME) + ": getWorkspaceSize without a maximum shape of scores: no workspace");
        return 0;
    }
    return nms::workspaceSize(largest);
}

int32_t BatchedNmsPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    nms::Shape shape;
    return report((nbInputs == kNbInputs && nbOutputs == kNbOutputs) ? shapeOf(in[0].dims, in[1].dims, shape)
                                                                     : "expects 2 inputs and 4 outputs");
}

int32_t BatchedNmsPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept
{
    nms::Shape shape;
    if (int32_t const failed = report(shapeOf(inputDesc[0].dims, inputDesc[1].dims, shape)))
    {
        return failed;
    }
    if (workspace == nullptr && nms::workspaceSize(shape) > 0)
    {
        return report("enqueue without a workspace (" + std::to_string(nms::workspaceSize(shape))
            + " bytes needed for scores " + toString(inputDesc[1].dims) + ")");
    }
    return reportLaunch(nms::launchBatchedNms(shape, mParams, static_cast<float const*>(inputs[0]),
        static_cast<float const*>(inputs[1]), static_cast<int32_t*>(outputs[0]), static_cast<float*>(outputs[1]),
        static_cast<float*>(outputs[2]), static_cast<int32_t*>(outputs[3]), workspace, stream));
}

PluginFieldCollection const* BatchedNmsPlugin::getFieldsToSerialize() noexcept
{
    mSerialized.clear();
    mSerialized.addFloat("score_threshold", &mParams.scoreThreshold);
    mSerialized.addFloat("iou_threshold", &mParams.iouThreshold);
    mSerialized.addInts("max_output_boxes", &mParams.maxOutputBoxes, 1);
    return mSerialized.collection();
}

} // namespace plugin
} // namespace dettool
