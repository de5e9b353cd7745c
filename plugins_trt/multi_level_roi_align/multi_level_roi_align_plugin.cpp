/*
 * DettoolMultiLevelRoIAlign TensorRT plugin.
 *
 * Inputs: rois float32 [R, 5], feat_0 ... feat_{L-1} float32 or float16 [B, C, H_l, W_l].
 * Output: [R, C, output_height, output_width], the features' type. Semantics: docs/custom_ops.md;
 * kernel: multi_level_roi_align_kernel.cu. roi_scale_factor is optional (default 1, no rescaling):
 * the attributes of version 1 without it create and deserialize version 1's plugin.
 */
#include "multi_level_roi_align/multi_level_roi_align_plugin.h"

#include "multi_level_roi_align/multi_level_roi_align_kernel.h"

#include <stdexcept>

using namespace nvinfer1;

namespace dettool
{
namespace plugin
{

FieldNames& MultiLevelRoiAlignPlugin::fieldNames()
{
    static FieldNames names{
        PluginField("output_height", nullptr, PluginFieldType::kINT32, 1),
        PluginField("output_width", nullptr, PluginFieldType::kINT32, 1),
        PluginField("featmap_strides", nullptr, PluginFieldType::kINT32, -1),
        PluginField("sampling_ratio", nullptr, PluginFieldType::kINT32, 1),
        PluginField("finest_scale", nullptr, PluginFieldType::kINT32, 1),
        PluginField("aligned", nullptr, PluginFieldType::kINT32, 1),
        PluginField("roi_scale_factor", nullptr, PluginFieldType::kFLOAT32, 1),
    };
    return names;
}

MultiLevelRoiAlignPlugin* MultiLevelRoiAlignPlugin::create(PluginFieldCollection const* fc)
{
    Attributes const attrs(fc);
    return new MultiLevelRoiAlignPlugin(attrs.requireInt("output_height"), attrs.requireInt("output_width"),
        attrs.requireInts("featmap_strides", -1), attrs.requireInt("sampling_ratio"), attrs.requireInt("finest_scale"),
        attrs.requireInt("aligned"), attrs.optionalFloat("roi_scale_factor", 1.0F));
}

MultiLevelRoiAlignPlugin::MultiLevelRoiAlignPlugin(int32_t outputHeight, int32_t outputWidth,
    std::vector<int32_t> featmapStrides, int32_t samplingRatio, int32_t finestScale, int32_t aligned,
    float roiScaleFactor)
    : mOutputHeight(outputHeight)
    , mOutputWidth(outputWidth)
    , mFeatmapStrides(std::move(featmapStrides))
    , mSamplingRatio(samplingRatio)
    , mFinestScale(finestScale)
    , mAligned(aligned)
    , mRoiScaleFactor(roiScaleFactor)
{
    if (mFeatmapStrides.empty() || numLevels() > roialign::kMaxLevels)
    {
        throw std::invalid_argument("featmap_strides must hold 1 to 8 values");
    }
    if (aligned != 0 && aligned != 1)
    {
        throw std::invalid_argument("aligned must be 0 or 1");
    }
    mParams.outputHeight = outputHeight;
    mParams.outputWidth = outputWidth;
    mParams.samplingRatio = samplingRatio;
    mParams.finestScale = finestScale;
    mParams.aligned = aligned == 1;
    mParams.roiScaleFactor = roiScaleFactor;
    mParams.numLevels = numLevels();
    for (int32_t l = 0; l < numLevels(); ++l)
    {
        if (mFeatmapStrides[l] < 1)
        {
            throw std::invalid_argument("featmap_strides must be >= 1");
        }
        mParams.spatialScale[l] = roialign::spatialScaleOf(mFeatmapStrides[l]);
    }
    roialign::Shape const noFeatures{};
    if (char const* error = roialign::checkShape(noFeatures, mParams))
    {
        throw std::invalid_argument(error);
    }
}

int32_t MultiLevelRoiAlignPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t MultiLevelRoiAlignPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != 1 + numLevels() || nbOutputs != 1)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[1]; // the features' type
    return 0;
}

int32_t MultiLevelRoiAlignPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != 1 + numLevels() || nbOutputs != 1 || inputs[0].nbDims != 2 || inputs[1].nbDims != 4)
    {
        logError(std::string(kNAME) + ": expects rois [R, 5] and " + std::to_string(numLevels())
            + " feature maps [B, C, H, W] (one per featmap_strides value), got " + std::to_string(nbInputs - 1));
        return -1;
    }
    outputs[0].nbDims = 4;
    outputs[0].d[0] = inputs[0].d[0];
    outputs[0].d[1] = inputs[1].d[1];
    outputs[0].d[2] = exprBuilder.constant(mOutputHeight);
    outputs[0].d[3] = exprBuilder.constant(mOutputWidth);
    return 0;
}

bool MultiLevelRoiAlignPlugin::supportsFormatCombination(
    int32_t pos, DynamicPluginTensorDesc const* inOut, int32_t nbInputs, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 + numLevels() || nbOutputs != 1 || pos < 0 || pos > nbInputs)
    {
        return false;
    }
    PluginTensorDesc const& desc = inOut[pos].desc;
    if (desc.format != TensorFormat::kLINEAR)
    {
        return false;
    }
    if (pos == 0) // rois
    {
        return desc.type == DataType::kFLOAT;
    }
    if (pos == 1) // feat_0
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[1].desc.type; // the other levels and the output
}

int32_t MultiLevelRoiAlignPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != 1 + numLevels() || nbOutputs != 1)
    {
        return -1;
    }
    Dims const& rois = in[0].desc.dims;
    if (rois.nbDims != 2 || (rois.d[1] != 5 && rois.d[1] != -1))
    {
        logError(std::string(kNAME) + ": rois must be [R, 5], not " + toString(rois));
        return -1;
    }
    for (int32_t l = 1; l < nbInputs; ++l)
    {
        if (in[l].desc.dims.nbDims != 4)
        {
            logError(std::string(kNAME) + ": feature maps must be [B, C, H, W], not " + toString(in[l].desc.dims));
            return -1;
        }
    }
    return 0;
}

size_t MultiLevelRoiAlignPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0;
}

std::string MultiLevelRoiAlignPlugin::shapeOf(PluginTensorDesc const* in, int32_t nbInputs, roialign::Shape& shape) const
{
    if (nbInputs != 1 + numLevels())
    {
        return "expects " + std::to_string(numLevels()) + " feature maps, got " + std::to_string(nbInputs - 1);
    }
    Dims const& rois = in[0].dims;
    if (rois.nbDims != 2 || rois.d[1] != 5)
    {
        return "rois must be [R, 5], not " + toString(rois);
    }
    shape.numRois = static_cast<int32_t>(rois.d[0]);
    Dims const& first = in[1].dims;
    for (int32_t l = 0; l < numLevels(); ++l)
    {
        Dims const& feat = in[1 + l].dims;
        if (feat.nbDims != 4 || feat.d[0] != first.d[0] || feat.d[1] != first.d[1])
        {
            return "feature maps must be [B, C, H_l, W_l] with one B and C, got " + toString(feat) + " after "
                + toString(first);
        }
        shape.height[l] = static_cast<int32_t>(feat.d[2]);
        shape.width[l] = static_cast<int32_t>(feat.d[3]);
    }
    shape.batch = static_cast<int32_t>(first.d[0]);
    shape.channels = static_cast<int32_t>(first.d[1]);
    char const* error = roialign::checkShape(shape, mParams);
    return error ? error : "";
}

int32_t MultiLevelRoiAlignPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    roialign::Shape shape;
    return report(nbOutputs == 1 ? shapeOf(in, nbInputs, shape) : "expects one output");
}

int32_t MultiLevelRoiAlignPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    roialign::Shape shape;
    std::string const error = shapeOf(inputDesc, 1 + numLevels(), shape);
    std::optional<Precision> const precision = precisionOf(inputDesc[1].type);
    if (!error.empty() || !precision)
    {
        return report(error.empty() ? "features must be float32 or float16" : error);
    }
    return reportLaunch(roialign::launchMultiLevelRoiAlign(
        *precision, shape, mParams, static_cast<float const*>(inputs[0]), inputs + 1, outputs[0], stream));
}

PluginFieldCollection const* MultiLevelRoiAlignPlugin::getFieldsToSerialize() noexcept
{
    mSerialized.clear();
    mSerialized.addInts("output_height", &mOutputHeight, 1);
    mSerialized.addInts("output_width", &mOutputWidth, 1);
    mSerialized.addInts("featmap_strides", mFeatmapStrides.data(), numLevels());
    mSerialized.addInts("sampling_ratio", &mSamplingRatio, 1);
    mSerialized.addInts("finest_scale", &mFinestScale, 1);
    mSerialized.addInts("aligned", &mAligned, 1);
    mSerialized.addFloat("roi_scale_factor", &mRoiScaleFactor);
    return mSerialized.collection();
}

} // namespace plugin
} // namespace dettool
