/*
 * DettoolPSRoIAlign TensorRT plugin.
 *
 * Inputs: features float32 or float16 [B, C * k * k, H, W], rois float32 [R, 5].
 * Output: [R, C, k, k], the features' type. Semantics: docs/custom_ops.md; kernel:
 * ps_roi_align_kernel.cu.
 */
#include "ps_roi_align/ps_roi_align_plugin.h"

#include "ps_roi_align/ps_roi_align_kernel.h"

#include <stdexcept>

using namespace nvinfer1;

namespace dettool
{
namespace plugin
{
namespace
{
constexpr int32_t kNbInputs = 2;
} // namespace

FieldNames& PsRoiAlignPlugin::fieldNames()
{
    static FieldNames names{
        PluginField("output_size", nullptr, PluginFieldType::kINT32, 1),
        PluginField("spatial_scale", nullptr, PluginFieldType::kFLOAT32, 1),
        PluginField("sampling_ratio", nullptr, PluginFieldType::kINT32, 1),
    };
    return names;
}

PsRoiAlignPlugin* PsRoiAlignPlugin::create(PluginFieldCollection const* fc)
{
    Attributes const attrs(fc);
    psroialign::Params params;
    params.outputSize = attrs.requireInt("output_size");
    params.spatialScale = attrs.requireFloat("spatial_scale");
    params.samplingRatio = attrs.requireInt("sampling_ratio");
    return new PsRoiAlignPlugin(params);
}

PsRoiAlignPlugin::PsRoiAlignPlugin(psroialign::Params const& params)
    : mParams(params)
{
    if (char const* error = psroialign::checkParams(params))
    {
        throw std::invalid_argument(error);
    }
}

int32_t PsRoiAlignPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t PsRoiAlignPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0]; // the features' type
    return 0;
}

int32_t PsRoiAlignPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs, DimsExprs const* /*shapeInputs*/,
    int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs, IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[1].nbDims != 2)
    {
        logError(std::string(kNAME) + ": expects features [B, C * k * k, H, W] and rois [R, 5]");
        return -1;
    }
    IDimensionExpr const* bins = exprBuilder.constant(psroialign::binsOf(mParams));
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[1].d[0];
    outputs[0].d[1] = exprBuilder.operation(DimensionOperation::kFLOOR_DIV, *inputs[0].d[1], *bins);
    outputs[0].d[2] = exprBuilder.constant(mParams.outputSize);
    outputs[0].d[3] = exprBuilder.constant(mParams.outputSize);
    return 0;
}

bool PsRoiAlignPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || pos < 0 || pos > kNbInputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    switch (pos)
    {
    case 0: return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF; // features
    case 1: return desc.type == DataType::kFLOAT;                                   // rois
    default: return desc.type == inOut[0].desc.type;                                // the output
    }
}

int32_t PsRoiAlignPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    Dims const& features = in[0].desc.dims;
    Dims const& rois = in[1].desc.dims;
    if (features.nbDims != 4 || (features.d[1] != -1 && features.d[1] % psroialign::binsOf(mParams) != 0))
    {
        logError(std::string(kNAME) + ": features must be [B, C * k * k, H, W] with k = "
            + std::to_string(mParams.outputSize) + ", not " + toString(features));
        return -1;
    }
    if (rois.nbDims != 2 || (rois.d[1] != 5 && rois.d[1] != -1))
    {
        logError(std::string(kNAME) + ": rois must be [R, 5], not " + toString(rois));
        return -1;
    }
    return 0;
}

size_t PsRoiAlignPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

std::string PsRoiAlignPlugin::shapeOf(PluginTensorDesc const* in, psroialign::Shape& shape) const
{
    Dims const& features = in[0].dims;
    Dims const& rois = in[1].dims;
    if (features.nbDims != 4)
    {
        return "features must be [B, C * k * k, H, W], not " + toString(features);
    }
    if (rois.nbDims != 2 || rois.d[1] != 5)
    {
        return "rois must be [R, 5], not " + toString(rois);
    }
    shape.numRois = static_cast<int32_t>(rois.d[0]);
    shape.batch = static_cast<int32_t>(features.d[0]);
    shape.channels = static_cast<int32_t>(features.d[1]);
    shape.height = static_cast<int32_t>(features.d[2]);
    shape.width = static_cast<int32_t>(features.d[3]);
    char const* error = psroialign::checkShape(shape, mParams);
    return error ? error : "";
}

int32_t PsRoiAlignPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    psroialign::Shape shape;
    return report((nbInputs == kNbInputs && nbOutputs == 1) ? shapeOf(in, shape) : "expects 2 inputs and 1 output");
}

int32_t PsRoiAlignPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    psroialign::Shape shape;
    std::string const error = shapeOf(inputDesc, shape);
    std::optional<Precision> const precision = precisionOf(inputDesc[0].type);
    if (!error.empty() || !precision)
    {
        return report(error.empty() ? "features must be float32 or float16" : error);
    }
    return reportLaunch(psroialign::launchPsRoiAlign(
        *precision, shape, mParams, inputs[0], static_cast<float const*>(inputs[1]), outputs[0], stream));
}

PluginFieldCollection const* PsRoiAlignPlugin::getFieldsToSerialize() noexcept
{
    mSerialized.clear();
    mSerialized.addInts("output_size", &mParams.outputSize, 1);
    mSerialized.addFloat("spatial_scale", &mParams.spatialScale);
    mSerialized.addInts("sampling_ratio", &mParams.samplingRatio, 1);
    return mSerialized.collection();
}

} // namespace plugin
} // namespace dettool
