/*
 * DettoolMultiLevelRoIAlign TensorRT plugin (IPluginV3) and its creator. See README.md beside it.
 */
#pragma once

#include "common/plugin_utils.h"
#include "multi_level_roi_align/multi_level_roi_align_math.h"

namespace dettool
{
namespace plugin
{

class MultiLevelRoiAlignPlugin : public PluginV3Base<MultiLevelRoiAlignPlugin>
{
public:
    static constexpr char const* kNAME = "DettoolMultiLevelRoIAlign";

    //! The attributes output_height, output_width, featmap_strides, sampling_ratio, finest_scale, aligned
    //! and the optional roi_scale_factor (default 1: the fields of version 1 without it give version
    //! 1's plugin).
    static FieldNames& fieldNames();
    static MultiLevelRoiAlignPlugin* create(nvinfer1::PluginFieldCollection const* fc);

    MultiLevelRoiAlignPlugin(int32_t outputHeight, int32_t outputWidth, std::vector<int32_t> featmapStrides,
        int32_t samplingRatio, int32_t finestScale, int32_t aligned, float roiScaleFactor);

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
    int32_t numLevels() const noexcept
    {
        return static_cast<int32_t>(mFeatmapStrides.size());
    }

    //! Sizes from rois and feature dims, or an error message.
    std::string shapeOf(nvinfer1::PluginTensorDesc const* in, int32_t nbInputs, roialign::Shape& shape) const;

    int32_t mOutputHeight;
    int32_t mOutputWidth;
    std::vector<int32_t> mFeatmapStrides;
    int32_t mSamplingRatio;
    int32_t mFinestScale;
    int32_t mAligned;
    float mRoiScaleFactor;
    roialign::Params mParams;
    SerializedFields mSerialized;
};

class MultiLevelRoiAlignPluginCreator : public PluginCreator<MultiLevelRoiAlignPlugin>
{
};

} // namespace plugin
} // namespace dettool
