/*
 * DettoolModulatedDeformConv TensorRT plugin.
 *
 * Inputs (one type, float32 or float16): input [B, C, H, W], offset [B, 2 G kH kW, Ho, Wo],
 * mask [B, G kH kW, Ho, Wo], weight [Co, C / groups, kH, kW], bias [Co].
 * Output: [B, Co, Ho, Wo] with Ho = (H + 2 pad_h - dil_h (kH - 1) - 1) / stride_h + 1.
 * Semantics: docs/custom_ops.md; kernel: modulated_deform_conv_kernel.cu.
 */
#include "modulated_deform_conv/modulated_deform_conv_plugin.h"

#include "modulated_deform_conv/modulated_deform_conv_kernel.h"

#include <stdexcept>

using namespace nvinfer1;

namespace dettool
{
namespace plugin
{
namespace
{
constexpr int32_t kNbInputs = 5;

//! (in + 2 pad - dil (k - 1) - 1) floordiv stride + 1 as a shape expression.
IDimensionExpr const* outputSizeExpr(
    IExprBuilder& b, IDimensionExpr const& in, IDimensionExpr const& kernel, int32_t pad, int32_t dil, int32_t stride)
{
    auto const* one = b.constant(1);
    auto const* span = b.operation(DimensionOperation::kSUM,
        *b.operation(DimensionOperation::kPROD, *b.constant(dil), *b.operation(DimensionOperation::kSUB, kernel, *one)),
        *one);
    auto const* room = b.operation(
        DimensionOperation::kSUB, *b.operation(DimensionOperation::kSUM, in, *b.constant(2 * pad)), *span);
    return b.operation(
        DimensionOperation::kSUM, *b.operation(DimensionOperation::kFLOOR_DIV, *room, *b.constant(stride)), *one);
}
} // namespace

FieldNames& ModulatedDeformConvPlugin::fieldNames()
{
    static FieldNames names{
        PluginField("stride", nullptr, PluginFieldType::kINT32, 2),
        PluginField("padding", nullptr, PluginFieldType::kINT32, 2),
        PluginField("dilation", nullptr, PluginFieldType::kINT32, 2),
        PluginField("groups", nullptr, PluginFieldType::kINT32, 1),
        PluginField("deform_groups", nullptr, PluginFieldType::kINT32, 1),
    };
    return names;
}

ModulatedDeformConvPlugin* ModulatedDeformConvPlugin::create(PluginFieldCollection const* fc)
{
    Attributes const attrs(fc);
    std::vector<int32_t> const stride = attrs.requireInts("stride", 2);
    std::vector<int32_t> const padding = attrs.requireInts("padding", 2);
    std::vector<int32_t> const dilation = attrs.requireInts("dilation", 2);
    dcn::Params params;
    params.strideH = stride[0];
    params.strideW = stride[1];
    params.padH = padding[0];
    params.padW = padding[1];
    params.dilationH = dilation[0];
    params.dilationW = dilation[1];
    params.groups = attrs.requireInt("groups");
    params.deformGroups = attrs.requireInt("deform_groups");
    return new ModulatedDeformConvPlugin(params);
}

ModulatedDeformConvPlugin::ModulatedDeformConvPlugin(dcn::Params const& params)
    : mParams(params)
    , mStride{params.strideH, params.strideW}
    , mPadding{params.padH, params.padW}
    , mDilation{params.dilationH, params.dilationW}
{
    if (params.strideH < 1 || params.strideW < 1 || params.dilationH < 1 || params.dilationW < 1 || params.padH < 0
        || params.padW < 0)
    {
        throw std::invalid_argument("stride and dilation must be >= 1 and padding >= 0");
    }
    if (params.groups < 1 || params.deformGroups < 1)
    {
        throw std::invalid_argument("groups and deform_groups must be >= 1");
    }
}

int32_t ModulatedDeformConvPlugin::getNbOutputs() const noexcept
{
    return 1;
}

int32_t ModulatedDeformConvPlugin::getOutputDataTypes(
    DataType* outputTypes, int32_t nbOutputs, DataType const* inputTypes, int32_t nbInputs) const noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    outputTypes[0] = inputTypes[0];
    return 0;
}

int32_t ModulatedDeformConvPlugin::getOutputShapes(DimsExprs const* inputs, int32_t nbInputs,
    DimsExprs const* /*shapeInputs*/, int32_t /*nbShapeInputs*/, DimsExprs* outputs, int32_t nbOutputs,
    IExprBuilder& exprBuilder) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1 || inputs[0].nbDims != 4 || inputs[3].nbDims != 4)
    {
        logError(std::string(kNAME) + ": expects input [B, C, H, W], offset, mask, weight [Co, C/g, kH, kW], bias");
        return -1;
    }
    DimsExprs const& input = inputs[0];
    DimsExprs const& weight = inputs[3];
    outputs[0].nbDims = 4;
    outputs[0].d[0] = input.d[0];
    outputs[0].d[1] = weight.d[0];
    outputs[0].d[2] = outputSizeExpr(exprBuilder, *input.d[2], *weight.d[2], mParams.padH, mParams.dilationH, mParams.strideH);
    outputs[0].d[3] = outputSizeExpr(exprBuilder, *input.d[3], *weight.d[3], mParams.padW, mParams.dilationW, mParams.strideW);
    return 0;
}

bool ModulatedDeformConvPlugin::supportsFormatCombination(
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
    if (pos == 0)
    {
        return desc.type == DataType::kFLOAT || desc.type == DataType::kHALF;
    }
    return desc.type == inOut[0].desc.type; // offset, mask, weight, bias and the output: the input's type
}

int32_t ModulatedDeformConvPlugin::configurePlugin(
    DynamicPluginTensorDesc const* in, int32_t nbInputs, DynamicPluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    if (nbInputs != kNbInputs || nbOutputs != 1)
    {
        return -1;
    }
    int32_t const wantDims[kNbInputs] = {4, 4, 4, 4, 1};
    for (int32_t i = 0; i < kNbInputs; ++i)
    {
        if (in[i].desc.dims.nbDims != wantDims[i])
        {
            logError(std::string(kNAME) + ": input " + std::to_string(i) + " must have " + std::to_string(wantDims[i])
                + " dimensions, not " + toString(in[i].desc.dims));
            return -1;
        }
    }
    return 0;
}

size_t ModulatedDeformConvPlugin::getWorkspaceSize(DynamicPluginTensorDesc const* /*inputs*/, int32_t /*nbInputs*/,
    DynamicPluginTensorDesc const* /*outputs*/, int32_t /*nbOutputs*/) const noexcept
{
    return 0; // the kernel samples its column tiles on the fly
}

std::string ModulatedDeformConvPlugin::shapeOf(PluginTensorDesc const* in, dcn::Shape& shape) const
{
    Dims const& input = in[0].dims;
    Dims const& offset = in[1].dims;
    Dims const& mask = in[2].dims;
    Dims const& weight = in[3].dims;
    Dims const& bias = in[4].dims;
    if (input.nbDims != 4 || offset.nbDims != 4 || mask.nbDims != 4 || weight.nbDims != 4 || bias.nbDims != 1)
    {
        return "expects input, offset, mask, weight of 4 dimensions and bias of 1";
    }
    shape.batch = static_cast<int32_t>(input.d[0]);
    shape.channels = static_cast<int32_t>(input.d[1]);
    shape.height = static_cast<int32_t>(input.d[2]);
    shape.width = static_cast<int32_t>(input.d[3]);
    shape.outChannels = static_cast<int32_t>(weight.d[0]);
    shape.kernelH = static_cast<int32_t>(weight.d[2]);
    shape.kernelW = static_cast<int32_t>(weight.d[3]);
    shape.outHeight = static_cast<int32_t>(offset.d[2]);
    shape.outWidth = static_cast<int32_t>(offset.d[3]);
    int64_t const taps = static_cast<int64_t>(mParams.deformGroups) * shape.kernelH * shape.kernelW;
    bool const consistent = weight.d[1] * mParams.groups == input.d[1] && bias.d[0] == weight.d[0]
        && offset.d[0] == input.d[0] && offset.d[1] == 2 * taps && mask.d[0] == input.d[0] && mask.d[1] == taps
        && mask.d[2] == offset.d[2] && mask.d[3] == offset.d[3];
    if (!consistent)
    {
        return "input " + toString(input) + ", offset " + toString(offset) + ", mask " + toString(mask) + ", weight "
            + toString(weight) + " and bias " + toString(bias) + " do not fit groups " + std::to_string(mParams.groups)
            + " and deform_groups " + std::to_string(mParams.deformGroups);
    }
    char const* error = dcn::checkShape(shape, mParams);
    return error ? error : "";
}

int32_t ModulatedDeformConvPlugin::onShapeChange(
    PluginTensorDesc const* in, int32_t nbInputs, PluginTensorDesc const* /*out*/, int32_t nbOutputs) noexcept
{
    dcn::Shape shape;
    return report((nbInputs == kNbInputs && nbOutputs == 1) ? shapeOf(in, shape) : "expects 5 inputs and 1 output");
}

int32_t ModulatedDeformConvPlugin::enqueue(PluginTensorDesc const* inputDesc, PluginTensorDesc const* /*outputDesc*/,
    void const* const* inputs, void* const* outputs, void* /*workspace*/, cudaStream_t stream) noexcept
{
    dcn::Shape shape;
    std::string const error = shapeOf(inputDesc, shape);
    std::optional<Precision> const precision = precisionOf(inputDesc[0].type);
    if (!error.empty() || !precision)
    {
        return report(error.empty() ? "tensors must be float32 or float16" : error);
    }
    return reportLaunch(dcn::launchModulatedDeformConv(
        *precision, shape, mParams, inputs[0], inputs[1], inputs[2], inputs[3], inputs[4], outputs[0], stream));
}

PluginFieldCollection const* ModulatedDeformConvPlugin::getFieldsToSerialize() noexcept
{
    mSerialized.clear();
    mSerialized.addInts("stride", mStride, 2);
    mSerialized.addInts("padding", mPadding, 2);
    mSerialized.addInts("dilation", mDilation, 2);
    mSerialized.addInts("groups", &mParams.groups, 1);
    mSerialized.addInts("deform_groups", &mParams.deformGroups, 1);
    return mSerialized.collection();
}

} // namespace plugin
} // namespace dettool
