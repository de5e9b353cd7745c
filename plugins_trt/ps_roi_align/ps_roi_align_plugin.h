/*
 * DettoolPSRoIAlign TensorRT plugin (IPluginV3) and its creator. See README.md beside it.
 */
#pragma once

#include "common/plugin_utils.h"
#include "ps_roi_align/ps_roi_align_math.h"

namespace dettool
{
namespace plugin
{

class PsRoiAlignPlugin : public PluginV3Base<PsRoiAlignPlugin>
{
public:
    static constexpr char const* kNAME = "DettoolPSRoIAlign";

    //! The attributes output_size, spatial_scale and sampling_ratio.
    static FieldNames& fieldNames();
    static PsRoiAlignPlugin* create(nvinfer1::PluginFieldCollection const* fc);

    explicit PsRoiAlignPlugin(psroialign::Params const& params);

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
    //! Sizes from the features and rois dims, or an error message.
    std::string shapeOf(nvinfer1::PluginTensorDesc const* in, psroialign::Shape& shape) const;

    psroialign::Params mParams;
    SerializedFields mSerialized;
};

class PsRoiAlignPluginCreator : public PluginCreator<PsRoiAlignPlugin>
{
};

} // namespace plugin
} // namespace dettool
