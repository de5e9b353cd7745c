/*
 * DettoolBatchedNMS TensorRT plugin (IPluginV3) and its creator. See README.md beside it.
 */
#pragma once

#include "batched_nms/batched_nms_math.h"
#include "common/plugin_utils.h"

namespace dettool
{
namespace plugin
{

class BatchedNmsPlugin : public PluginV3Base<BatchedNmsPlugin>
{
public:
    static constexpr char const* kNAME = "DettoolBatchedNMS";

    //! The attributes score_threshold, iou_threshold, max_output_boxes.
    static FieldNames& fieldNames();
    static BatchedNmsPlugin* create(nvinfer1::PluginFieldCollection const* fc);

    explicit BatchedNmsPlugin(nms::Params const& params);

    // IPluginV3OneBuild
    int32_t getNbOutputs() const noexcept override;
    int32_t getOutputDataTypes(nvinfer1::DataType* outputTypes, int32_t nbOutputs,
        nvinfer1::DataType const* inputTypes, int32_t nbInputs) const noexcept override;
    int32_t getOutputShapes(nvinfer1::DimsExprs const* inputs, int32_t nbInputs, nvinfer1::DimsExprs const* shapeInputs,
        int32_t nbShapeInputs, nvinfer1::DimsExprs* outputs, int32_t nbOutputs,
        nvinfer1::IExprBuilder& exprBuilder) noexcept override;
    bool supportsFormatCombination(int32_t pos, nvinfer1::DynamicPluginTensorDesc const* inOut, int32_t nbInputs,
        int32_t nbOutputs) noexcept override;
    int32_t configurePlugin(nvinfer1::DynamicPluginTensorDesc const* in, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* out, int32_t nbOutputs) noexcept override;
    size_t getWorkspaceSize(nvinfer1::DynamicPluginTensorDesc const* inputs, int32_t nbInputs,
        nvinfer1::DynamicPluginTensorDesc const* outputs, int32_t nbOutputs) const noexcept override;

    // IPluginV3OneRuntime
    int32_t onShapeChange(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, nvinfer1::PluginTensorDesc const* out,
        int32_t nbOutputs) noexcept override;
    int32_t enqueue(nvinfer1::PluginTensorDesc const* inputDesc, nvinfer1::PluginTensorDesc const* outputDesc,
        void const* const* inputs, void* const* outputs, void* workspace, cudaStream_t stream) noexcept override;
    nvinfer1::PluginFieldCollection const* getFieldsToSerialize() noexcept override;

private:
    //! Sizes from boxes and scores dims, or an error message.
    static std::string shapeOf(nvinfer1::Dims const& boxes, nvinfer1::Dims const& scores, nms::Shape& shape);

    //! Sizes from the profile's largest scores dims; false when a dimension has no maximum.
    static bool largestShape(nvinfer1::Dims const& maxScores, nms::Shape& shape);

    nms::Params mParams;
    SerializedFields mSerialized;
};

class BatchedNmsPluginCreator : public PluginCreator<BatchedNmsPlugin>
{
};

} // namespace plugin
} // namespace dettool
