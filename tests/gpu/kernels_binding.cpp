/*
 * torch bindings of the plugins' CUDA launchers (plugins_trt/<plugin>/<plugin>_kernel.h), built by
 * tests/gpu/check_kernels_cuda.py with torch.utils.cpp_extension: the kernels TensorRT runs,
 * called on torch CUDA tensors without TensorRT.
 */
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "batched_nms/batched_nms_kernel.h"
#include "modulated_deform_conv/modulated_deform_conv_kernel.h"
#include "multi_level_roi_align/multi_level_roi_align_kernel.h"
#include "ps_roi_align/ps_roi_align_kernel.h"

#include <vector>

namespace
{

void checkCuda(at::Tensor const& t, char const* name)
{
    TORCH_CHECK(t.is_cuda() && t.is_contiguous(), name, " must be a contiguous CUDA tensor");
}

dettool::Precision precisionOf(at::Tensor const& t)
{
    TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kHalf, "float32 or float16 expected");
    return t.scalar_type() == at::kFloat ? dettool::Precision::kFLOAT32 : dettool::Precision::kFLOAT16;
}

void checkLaunch(cudaError_t status)
{
    TORCH_CHECK(status == cudaSuccess, "kernel launch failed: ", cudaGetErrorString(status));
}

std::vector<at::Tensor> batchedNms(
    at::Tensor boxes, at::Tensor scores, double scoreThreshold, double iouThreshold, int64_t maxOutputBoxes)
{
    checkCuda(boxes, "boxes");
    checkCuda(scores, "scores");
    TORCH_CHECK(boxes.scalar_type() == at::kFloat && scores.scalar_type() == at::kFloat, "float32 expected");
    TORCH_CHECK(scores.dim() == 3 && (boxes.dim() == 3 || boxes.dim() == 4), "scores [B, N, C], boxes [B, N, (C,) 4]");
    dettool::nms::Shape shape;
    shape.batch = static_cast<int32_t>(scores.size(0));
    shape.numBoxes = static_cast<int32_t>(scores.size(1));
    shape.numClasses = static_cast<int32_t>(scores.size(2));
    shape.boxesPerClass = boxes.dim() == 4;
    dettool::nms::Params params;
    params.scoreThreshold = static_cast<float>(scoreThreshold);
    params.iouThreshold = static_cast<float>(iouThreshold);
    params.maxOutputBoxes = static_cast<int32_t>(maxOutputBoxes);
    char const* error = dettool::nms::checkShape(shape, params);
    TORCH_CHECK(error == nullptr, error ? error : "");

    auto const intOpts = scores.options().dtype(at::kInt);
    auto numDets = at::full({shape.batch}, -7, intOpts);
    auto detBoxes = at::full({shape.batch, maxOutputBoxes, 4}, NAN, scores.options());
    auto detScores = at::full({shape.batch, maxOutputBoxes}, NAN, scores.options());
    auto detClasses = at::full({shape.batch, maxOutputBoxes}, -7, intOpts);
    auto workspace = at::empty(
        {static_cast<int64_t>(dettool::nms::workspaceSize(shape)) + 1}, scores.options().dtype(at::kByte));
    checkLaunch(dettool::nms::launchBatchedNms(shape, params, boxes.data_ptr<float>(), scores.data_ptr<float>(),
        numDets.data_ptr<int32_t>(), detBoxes.data_ptr<float>(), detScores.data_ptr<float>(),
        detClasses.data_ptr<int32_t>(), workspace.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()));
    return {numDets, detBoxes, detScores, detClasses};
}

at::Tensor multiLevelRoiAlign(at::Tensor rois, std::vector<at::Tensor> feats, std::vector<int64_t> featmapStrides,
    int64_t outputHeight, int64_t outputWidth, int64_t samplingRatio, int64_t finestScale, bool aligned,
    double roiScaleFactor)
{
    checkCuda(rois, "rois");
    TORCH_CHECK(rois.scalar_type() == at::kFloat && rois.dim() == 2 && rois.size(1) == 5, "rois must be float32 [R, 5]");
    TORCH_CHECK(!feats.empty() && feats.size() == featmapStrides.size()
            && feats.size() <= static_cast<size_t>(dettool::roialign::kMaxLevels),
        "one feature map per stride, at most 8");
    dettool::roialign::Shape shape;
    dettool::roialign::Params params;
    shape.numRois = static_cast<int32_t>(rois.size(0));
    shape.batch = static_cast<int32_t>(feats[0].size(0));
    shape.channels = static_cast<int32_t>(feats[0].size(1));
    params.outputHeight = static_cast<int32_t>(outputHeight);
    params.outputWidth = static_cast<int32_t>(outputWidth);
    params.samplingRatio = static_cast<int32_t>(samplingRatio);
    params.finestScale = static_cast<int32_t>(finestScale);
    params.aligned = aligned;
    params.roiScaleFactor = static_cast<float>(roiScaleFactor);
    params.numLevels = static_cast<int32_t>(feats.size());
    std::vector<void const*> levels;
    for (size_t l = 0; l < feats.size(); ++l)
    {
        checkCuda(feats[l], "feature maps");
        TORCH_CHECK(feats[l].dim() == 4 && feats[l].size(0) == shape.batch && feats[l].size(1) == shape.channels
                && feats[l].scalar_type() == feats[0].scalar_type(),
            "feature maps must be [B, C, H_l, W_l] of one type");
        shape.height[l] = static_cast<int32_t>(feats[l].size(2));
        shape.width[l] = static_cast<int32_t>(feats[l].size(3));
        params.spatialScale[l] = dettool::roialign::spatialScaleOf(static_cast<int32_t>(featmapStrides[l]));
        levels.push_back(feats[l].data_ptr());
    }
    char const* error = dettool::roialign::checkShape(shape, params);
    TORCH_CHECK(error == nullptr, error ? error : "");
    auto out = at::full({shape.numRois, shape.channels, outputHeight, outputWidth}, NAN, feats[0].options());
    checkLaunch(dettool::roialign::launchMultiLevelRoiAlign(precisionOf(feats[0]), shape, params,
        rois.data_ptr<float>(), levels.data(), out.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()));
    return out;
}

at::Tensor modulatedDeformConv(at::Tensor input, at::Tensor offset, at::Tensor mask, at::Tensor weight, at::Tensor bias,
    std::vector<int64_t> stride, std::vector<int64_t> padding, std::vector<int64_t> dilation, int64_t groups,
    int64_t deformGroups)
{
    for (auto const* t : {&input, &offset, &mask, &weight, &bias})
    {
        checkCuda(*t, "every tensor");
        TORCH_CHECK(t->scalar_type() == input.scalar_type(), "every tensor must have the input's type");
    }
    TORCH_CHECK(input.dim() == 4 && weight.dim() == 4 && offset.dim() == 4 && mask.dim() == 4 && bias.dim() == 1
            && stride.size() == 2 && padding.size() == 2 && dilation.size() == 2,
        "input, offset, mask, weight 4-d, bias 1-d, stride / padding / dilation 2 values");
    dettool::dcn::Params params;
    params.strideH = static_cast<int32_t>(stride[0]);
    params.strideW = static_cast<int32_t>(stride[1]);
    params.padH = static_cast<int32_t>(padding[0]);
    params.padW = static_cast<int32_t>(padding[1]);
    params.dilationH = static_cast<int32_t>(dilation[0]);
    params.dilationW = static_cast<int32_t>(dilation[1]);
    params.groups = static_cast<int32_t>(groups);
    params.deformGroups = static_cast<int32_t>(deformGroups);
    dettool::dcn::Shape shape;
    shape.batch = static_cast<int32_t>(input.size(0));
    shape.channels = static_cast<int32_t>(input.size(1));
    shape.height = static_cast<int32_t>(input.size(2));
    shape.width = static_cast<int32_t>(input.size(3));
    shape.outChannels = static_cast<int32_t>(weight.size(0));
    shape.kernelH = static_cast<int32_t>(weight.size(2));
    shape.kernelW = static_cast<int32_t>(weight.size(3));
    shape.outHeight = static_cast<int32_t>(offset.size(2));
    shape.outWidth = static_cast<int32_t>(offset.size(3));
    char const* error = dettool::dcn::checkShape(shape, params);
    TORCH_CHECK(error == nullptr, error ? error : "");
    int64_t const taps = deformGroups * shape.kernelH * shape.kernelW;
    TORCH_CHECK(offset.size(1) == 2 * taps && mask.size(1) == taps && weight.size(1) * groups == shape.channels,
        "offset, mask or weight channels do not fit groups / deform_groups");
    auto out = at::full({shape.batch, shape.outChannels, shape.outHeight, shape.outWidth}, NAN, input.options());
    checkLaunch(dettool::dcn::launchModulatedDeformConv(precisionOf(input), shape, params, input.data_ptr(),
        offset.data_ptr(), mask.data_ptr(), weight.data_ptr(), bias.data_ptr(), out.data_ptr(),
        c10::cuda::getCurrentCUDAStream().stream()));
    return out;
}

at::Tensor psRoiAlign(at::Tensor features, at::Tensor rois, int64_t outputSize, double spatialScale,
    int64_t samplingRatio)
{
    checkCuda(features, "features");
    checkCuda(rois, "rois");
    TORCH_CHECK(rois.scalar_type() == at::kFloat && rois.dim() == 2 && rois.size(1) == 5, "rois must be float32 [R, 5]");
    TORCH_CHECK(features.dim() == 4, "features must be [B, C * k * k, H, W]");
    dettool::psroialign::Shape shape;
    shape.numRois = static_cast<int32_t>(rois.size(0));
    shape.batch = static_cast<int32_t>(features.size(0));
    shape.channels = static_cast<int32_t>(features.size(1));
    shape.height = static_cast<int32_t>(features.size(2));
    shape.width = static_cast<int32_t>(features.size(3));
    dettool::psroialign::Params params;
    params.outputSize = static_cast<int32_t>(outputSize);
    params.spatialScale = static_cast<float>(spatialScale);
    params.samplingRatio = static_cast<int32_t>(samplingRatio);
    char const* error = dettool::psroialign::checkShape(shape, params);
    TORCH_CHECK(error == nullptr, error ? error : "");
    auto out = at::full({shape.numRois, dettool::psroialign::outputChannels(shape, params), outputSize, outputSize}, NAN,
        features.options());
    checkLaunch(dettool::psroialign::launchPsRoiAlign(precisionOf(features), shape, params, features.data_ptr(),
        rois.data_ptr<float>(), out.data_ptr(), c10::cuda::getCurrentCUDAStream().stream()));
    return out;
}

} // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m)
{
    m.def("batched_nms", &batchedNms, "DettoolBatchedNMS kernel");
    m.def("multi_level_roi_align", &multiLevelRoiAlign, "DettoolMultiLevelRoIAlign kernel");
    m.def("modulated_deform_conv", &modulatedDeformConv, "DettoolModulatedDeformConv kernel");
    m.def("ps_roi_align", &psRoiAlign, "DettoolPSRoIAlign kernel");
}
