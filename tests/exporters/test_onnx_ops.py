"""Export of the dettool ops to ONNX (custom and portable flavours), run in ONNX Runtime.

One tiny module calls every op (NMS on shared and per-class boxes, RoIAlign aligned and not and
with roi_scale_factor, DCNv2, position-sensitive RoIAlign with k = 3 and 7); it is exported once
per flavour (about 3 s each) with dynamic batch, box / RoI counts and feature sizes, then run
through ``runtime.ort_custom_ops.make_session`` and compared with the eager reference.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn
from torch.export import Dim

from dettool.exporters.fp16 import convert_to_fp16
from dettool.exporters.onnx_ops import translation_table
from dettool.ops import (
    ONNX_DOMAIN,
    ONNX_OP_NAMES,
    batched_nms,
    modulated_deform_conv,
    multi_level_roi_align,
    ps_roi_align,
)
from dettool.runtime.ort_custom_ops import make_session

STRIDES = [4, 8, 16]
K = 30
NMS_OUTPUTS = ["num_dets", "det_boxes", "det_scores", "det_classes",
               "num_dets_c", "det_boxes_c", "det_scores_c", "det_classes_c"]
ROI_ALIGN_OUTPUTS = ["pooled", "pooled_not_aligned", "pooled_rescaled"]
DEFORM_CONV_OUTPUTS = ["deformed"]
# position-sensitive RoIAlign of the 441 = 49 * 9 channels of input "ps" (stride 8): output -> (k, sampling_ratio)
PS_ROI_ALIGN_OUTPUTS = {"ps_pooled_k3": (3, 2), "ps_pooled_k7": (7, 0)}
PS_STRIDE = 8
OUTPUT_NAMES = NMS_OUTPUTS + ROI_ALIGN_OUTPUTS + DEFORM_CONV_OUTPUTS + list(PS_ROI_ALIGN_OUTPUTS)


class AllOps(nn.Module):
    """NMS on shared and per-class boxes; RoIAlign with 2x2 sampling aligned, adaptive not aligned,
    and RoIs enlarged 1.3 times (Double-Head R-CNN); DCNv2 with predicted offsets and masks (stride
    2, groups 2, deform groups 2); position-sensitive RoIAlign 3 x 3 with 2x2 sampling and 7 x 7
    adaptive (R-FCN) of the same RoIs."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.offset_mask = nn.Conv2d(4, 3 * 2 * 9, 3, stride=2, padding=1)
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, boxes, class_boxes, scores, rois, f0, f1, f2, x, ps):
        out = self.offset_mask(x)
        offset, mask = out[:, :36], out[:, 36:].sigmoid()
        return (*batched_nms(boxes, scores, 0.2, 0.5, K), *batched_nms(class_boxes, scores, 0.2, 0.5, K),
                multi_level_roi_align(rois, [f0, f1, f2], 7, 7, STRIDES, 2, 56, True),
                multi_level_roi_align(rois, [f0, f1, f2], 5, 3, STRIDES, 0, 56, False),
                multi_level_roi_align(rois, [f0, f1, f2], 7, 7, STRIDES, 2, 56, True, roi_scale_factor=1.3),
                modulated_deform_conv(x, offset, mask, self.weight, self.bias, [2, 2], [1, 1], [1, 1], 2, 2),
                *(ps_roi_align(ps, rois, k, 1 / PS_STRIDE, sampling_ratio)
                  for k, sampling_ratio in PS_ROI_ALIGN_OUTPUTS.values()))


def nms_inputs(batch: int, num_boxes: int = 50, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_boxes, 4, 2, generator=g) * 100
    boxes = torch.cat([xy, xy + torch.rand(batch, num_boxes, 4, 2, generator=g) * 60 + 1], dim=-1)
    scores = torch.rand(batch, num_boxes, 3, generator=g)
    return {"boxes": boxes[:, :, 0], "class_boxes": boxes[:, :, 1:], "scores": scores}


def roi_align_inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    side = torch.tensor([[8.0, 8], [50, 40], [150, 100], [300, 260], [20, 200], [500, 500], [3, 3], [90, 90]])
    xy = torch.rand(len(side), 2, generator=g) * 160 - 20  # some RoIs reach outside the image
    index = torch.arange(len(side)).remainder(batch).float()[:, None]
    rois = torch.cat([index, xy.round(), (xy + side).round()], dim=1)  # integers: exact in float16 too
    feats = {f"f{i}": torch.randn(batch, 4, 160 // s, 192 // s, generator=g) for i, s in enumerate(STRIDES)}
    return {"rois": rois, **feats}


def deform_conv_inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    return {"x": torch.randn(batch, 4, 11, 13, generator=torch.Generator().manual_seed(seed))}


def ps_roi_align_inputs(batch: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """Features of 49 * 9 channels (9 output channels at k = 7, 49 at k = 3) at stride 8 of 160 x 192."""
    return {"ps": torch.randn(batch, 441, 160 // PS_STRIDE, 192 // PS_STRIDE,
                              generator=torch.Generator().manual_seed(100 + seed))}


def all_inputs(batch: int, seed: int = 0, **replaced: torch.Tensor) -> dict[str, torch.Tensor]:
    """Inputs of every op at ``batch`` (the graph shares the batch dimension), some replaced."""
    inputs = {**nms_inputs(batch, seed=seed), **roi_align_inputs(batch, seed), **deform_conv_inputs(batch, seed),
              **ps_roi_align_inputs(batch, seed)}
    return {**inputs, **replaced}


def dynamic_shapes() -> tuple[dict[int, Dim], ...]:
    b, n = Dim("batch"), Dim("num_boxes")
    feats = [{0: b, 2: Dim(f"h{i}"), 3: Dim(f"w{i}")} for i in range(len(STRIDES))]
    return ({0: b, 1: n}, {0: b, 1: n}, {0: b, 1: n}, {0: Dim("num_rois")}, *feats, {0: b, 2: Dim("h"), 3: Dim("w")},
            {0: b, 2: Dim("ps_h"), 3: Dim("ps_w")})


MODULE = AllOps().eval()
FLAVOURS = ("custom", "portable")


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """``export(flavour) -> Path`` of the exported ``.onnx``, each flavour exported once per module."""
    paths: dict[str, Path] = {}

    def get(flavour: str) -> Path:
        if flavour not in paths:
            inputs = all_inputs(2)
            program = torch.onnx.export(MODULE, tuple(inputs.values()), dynamo=True, opset_version=19,
                                        dynamic_shapes=dynamic_shapes(), input_names=list(inputs),
                                        output_names=OUTPUT_NAMES,
                                        custom_translation_table=translation_table(portable=flavour == "portable"))
            paths[flavour] = tmp_path_factory.mktemp("onnx") / f"all_ops-{flavour}.onnx"
            onnx.save(program.model_proto, paths[flavour])
        return paths[flavour]

    return get


def assert_matches_eager(session, inputs: dict[str, torch.Tensor], atol: dict[str, float] | None = None) -> None:
    """ONNX Runtime's outputs equal the eager module's: integers exactly, floats within ``atol``
    (by output name; default 1e-5) plus a relative 1e-5."""
    with torch.no_grad():
        expected = MODULE(*inputs.values())
    outputs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    assert len(outputs) == len(expected)
    for name, out, ref in zip(OUTPUT_NAMES, outputs, expected):
        ref = ref.numpy()
        assert out.dtype == ref.dtype and out.shape == ref.shape, name
        if out.dtype.kind == "f":
            np.testing.assert_allclose(out, ref, rtol=1e-5, atol=(atol or {}).get(name, 1e-5), err_msg=name)
        else:
            np.testing.assert_array_equal(out, ref, err_msg=name)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_model_passes_the_full_checker_with_dynamic_dims(export, flavour: str) -> None:
    model = onnx.load(export(flavour))
    onnx.checker.check_model(model, full_check=True)
    for value, dynamic in zip(model.graph.input, dynamic_shapes()):  # batch, box / RoI counts, feature H, W
        dims = value.type.tensor_type.shape.dim
        for axis in dynamic:
            assert dims[axis].dim_param and not dims[axis].HasField("dim_value"), (value.name, axis)
    for value in model.graph.output:  # the batch, or the number of RoIs
        assert value.type.tensor_type.shape.dim[0].dim_param, value.name
    outputs = {value.name: value.type.tensor_type.shape.dim for value in model.graph.output}
    assert all(d.dim_param for d in outputs["deformed"][2:])  # DCN's Ho, Wo
    for name, (k, _) in PS_ROI_ALIGN_OUTPUTS.items():  # [R, 441 / k^2, k, k]
        assert [d.dim_value for d in outputs[name][1:]] == [441 // (k * k), k, k], name


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_flavour_decides_the_nodes(export, flavour: str) -> None:
    model = onnx.load(export(flavour))
    dettool_nodes = [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
    if flavour == "custom":
        assert Counter(n.op_type for n in dettool_nodes) == {ONNX_OP_NAMES["batched_nms"]: 2,
                                                             ONNX_OP_NAMES["multi_level_roi_align"]: 3,
                                                             ONNX_OP_NAMES["modulated_deform_conv"]: 1,
                                                             ONNX_OP_NAMES["ps_roi_align"]: 2}
        for node in dettool_nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["plugin_namespace"] == b"dettool" and attrs["plugin_version"] == b"1"
        # roi_scale_factor is written only where it is not 1 (nodes without it are unchanged).
        factors = [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}.get("roi_scale_factor")
                   for n in dettool_nodes if n.op_type == ONNX_OP_NAMES["multi_level_roi_align"]]
        assert factors.count(None) == 2 and [f for f in factors if f is not None] == [pytest.approx(1.3)]
        assert (ONNX_DOMAIN, 1) in [(o.domain, o.version) for o in model.opset_import]
    else:
        assert {n.domain for n in model.graph.node} == {""}
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 19)]
        assert {"NonMaxSuppression", "RoiAlign", "DeformConv"} <= {n.op_type for n in model.graph.node}
        half_pixel = [n for n in model.graph.node if n.op_type == "RoiAlign" and
                      onnx.helper.get_node_attr_value(n, "coordinate_transformation_mode") == b"half_pixel"]
        assert len(half_pixel) == 2 * 3 + 2  # multi-level aligned: one per level; ps: one per node


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_onnxruntime_matches_eager_at_batch_1_and_3(export, flavour: str) -> None:
    session = make_session(export(flavour))
    for batch in (1, 3):
        assert_matches_eager(session, all_inputs(batch, seed=batch))


def edge_inputs() -> dict[str, list[dict[str, torch.Tensor]]]:
    """Per op, inputs of the whole module that stress that op."""
    g = torch.Generator().manual_seed(5)
    quiet = nms_inputs(2)  # nothing above the 0.2 threshold: scores below it or exactly at it
    quiet["scores"] = torch.where(quiet["scores"] > 0.5, torch.tensor(0.2), quiet["scores"] * 0.2)
    ties = nms_inputs(3, num_boxes=40, seed=5)  # equal scores: smaller n * C + c first, in every runtime
    ties["scores"] = torch.randint(0, 5, ties["scores"].shape, generator=g) / 4.0
    rois = roi_align_inputs(2)["rois"]
    invalid_rois = torch.tensor([[0, 50.0, 10, 20, 40], [1, 50, 40, 20, 10],  # negative area: zeros; positive
                                 [-1, 10, 10, 40, 40], [2, 10, 10, 40, 40],  # outside the batch: zeros
                                 [-0.5, 10, 10, 40, 40], [1.9, 10, 10, 40, 40]])  # truncated to 0 and 1
    return {
        "nms": [all_inputs(2, **nms_inputs(2, num_boxes=0)),  # N = 0: TopK's k = 0, all rows padding
                all_inputs(2, **nms_inputs(2, num_boxes=4)),  # N * C = 12 < K
                all_inputs(2, **quiet), all_inputs(3, **ties)],
        "roi_align": [all_inputs(2, rois=rois[:0]),  # no RoIs
                      all_inputs(2, rois=torch.tensor([[1, 10.0, 10, 40, 30], [0, 100, 80, 104, 90]])),  # one level
                      all_inputs(2, rois=invalid_rois)],
        "deform_conv": [all_inputs(2, x=torch.randn(2, 4, 1, 1, generator=g)),  # 1 x 1 image
                        all_inputs(1, x=torch.randn(1, 4, 2, 3, generator=g) * 5)],  # taps far outside
        "ps_roi_align": [all_inputs(2, rois=ps_edge_rois()),
                         all_inputs(3, rois=ps_edge_rois(), ps=torch.randn(3, 441, 1, 1, generator=g))],  # 1 x 1 map
    }


def ps_edge_rois() -> torch.Tensor:
    """Position-sensitive RoIAlign's edge cases: a point, zero width, zero height (adaptive
    sampling takes no point: 0, where torchvision would return NaN), inverted sides (both, one), partly
    and fully outside the 160 x 192 image, batch indices outside the batch or truncated toward 0."""
    return torch.tensor([[0, 40.0, 40, 40, 40], [1, 30, 10, 30, 90], [0, 10, 70, 150, 70], [1, 120, 100, 20, 30],
                         [0, 150, 10, 20, 90],
                         [0, -50, -40, 60, 50], [1, 150, 120, 260, 230], [0, -300, -300, -200, -200],
                         [1, 500, 400, 600, 500], [2, 10, 10, 90, 70], [-1, 10, 10, 90, 70], [1.9, 10, 10, 90, 70],
                         [-0.5, 0, 0, 192, 160]])


@pytest.mark.parametrize("flavour", FLAVOURS)
@pytest.mark.parametrize("op_name", ["nms", "roi_align", "deform_conv", "ps_roi_align"])
def test_edge_cases_in_onnxruntime(export, flavour: str, op_name: str) -> None:
    session = make_session(export(flavour))
    for inputs in edge_inputs()[op_name]:
        assert_matches_eager(session, inputs)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_rescaled_rois_pool_as_eager_to_the_bit(export, flavour: str) -> None:
    """roi_scale_factor 1.3 on RoIs with fractional coordinates at every level: levels of the
    original RoIs, rescaling in float32, in both flavours exactly as the torch op."""
    g = torch.Generator().manual_seed(9)
    xy = torch.rand(60, 2, generator=g) * 180 - 20
    side = 4 * 100 ** torch.rand(60, 2, generator=g)
    rois = torch.cat([torch.randint(0, 2, (60, 1), generator=g).float(), xy, xy + side], dim=1)
    inputs = all_inputs(2, rois=rois)
    with torch.no_grad():
        expected = dict(zip(OUTPUT_NAMES, MODULE(*inputs.values())))
    session = make_session(export(flavour))
    outputs = dict(zip(OUTPUT_NAMES, session.run(None, {k: v.numpy() for k, v in inputs.items()})))
    for name in ROI_ALIGN_OUTPUTS:
        np.testing.assert_array_equal(outputs[name], expected[name].numpy(), err_msg=name)


def fractional_rois(num: int, batch: int, seed: int) -> torch.Tensor:
    """RoIs with fractional coordinates, sides 4 .. 400 px, some across the 160 x 192 image's border."""
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(num, 2, generator=g) * 180 - 20
    side = 4 * 100 ** torch.rand(num, 2, generator=g)
    return torch.cat([torch.randint(0, batch, (num, 1), generator=g).float(), xy, xy + side], dim=1)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ps_roi_align_equals_the_torch_op(export, flavour: str) -> None:
    """Custom node (the torch op as an onnxruntime-extensions Python op) and portable lowering
    (RoiAlign + Gather run by plain onnxruntime) on RoIs with fractional coordinates: measured
    equal to the torch op to the bit; asserted within 1e-5."""
    inputs = all_inputs(2, seed=10, rois=fractional_rois(80, 2, seed=10))
    model = onnx.load(export(flavour))
    session = make_session(model) if flavour == "custom" else ort.InferenceSession(model.SerializeToString())
    outputs = dict(zip(OUTPUT_NAMES, session.run(None, {k: v.numpy() for k, v in inputs.items()})))
    for name, (k, sampling_ratio) in PS_ROI_ALIGN_OUTPUTS.items():
        want = ps_roi_align(inputs["ps"], inputs["rois"], k, 1 / PS_STRIDE, sampling_ratio).numpy()
        np.testing.assert_allclose(outputs[name], want, rtol=0, atol=1e-5, err_msg=name)
        assert np.abs(want).sum(axis=(1, 2, 3)).min() > 0, name  # every RoI pools something


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ps_roi_align_in_the_fp16_graph(export, flavour: str) -> None:
    """``exporters.fp16.convert_to_fp16``. Custom: the node takes float16 features and float32 RoIs
    (fractional coordinates, not rounded), and outputs the torch op on the float16 features.
    Portable: RoiAlign is kept float32 and reads the float32 features input directly, the Gather
    after it runs in float16, so the output is the float32 torch op rounded to float16 once (the
    RoIs have integer coordinates: the converter rounds the portable graph's RoI input to float16
    on its way to RoiAlign, exact for integers below 2048). Measured equal to the bit; asserted
    within one float16 ulp."""
    model = convert_to_fp16(onnx.load(export(flavour)))
    rois = fractional_rois(60, 3, seed=11)
    if flavour == "custom":
        types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info]}
        nodes = [n for n in model.graph.node if n.op_type == ONNX_OP_NAMES["ps_roi_align"]]
        assert len(nodes) == 2
        for node in nodes:
            assert (types[node.input[0]], types[node.input[1]]) == (onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT)
        session = make_session(model)
    else:
        rois = rois.round()
        session = ort.InferenceSession(model.SerializeToString())
    inputs = all_inputs(3, seed=11, rois=rois)
    outputs = dict(zip(OUTPUT_NAMES, session.run(None, {k: v.numpy() for k, v in inputs.items()})))
    features = inputs["ps"].half() if flavour == "custom" else inputs["ps"]
    for name, (k, sampling_ratio) in PS_ROI_ALIGN_OUTPUTS.items():
        want = ps_roi_align(features, rois, k, 1 / PS_STRIDE, sampling_ratio).half().float().numpy()
        assert outputs[name].dtype == np.float32  # the graph's outputs stay float32
        np.testing.assert_allclose(outputs[name], want, rtol=1e-3, atol=1e-3, err_msg=name)


def test_custom_model_in_float16(export) -> None:
    """FP16 graph (onnxruntime's converter, NMS kept in float32, RoIAlign, DCN and PS RoIAlign on float16
    inputs): NMS exact on its inputs rounded to float16; RoIAlign and DCN within 2e-2 of the
    float32 reference (outputs of magnitude up to ~4; measured 2e-3)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(export("custom")), keep_io_types=True,
                                     op_block_list=[ONNX_OP_NAMES["batched_nms"]])
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info]}
    feature_input = {ONNX_OP_NAMES["batched_nms"]: (1, onnx.TensorProto.FLOAT),
                     ONNX_OP_NAMES["multi_level_roi_align"]: (1, onnx.TensorProto.FLOAT16),
                     ONNX_OP_NAMES["modulated_deform_conv"]: (0, onnx.TensorProto.FLOAT16),
                     ONNX_OP_NAMES["ps_roi_align"]: (0, onnx.TensorProto.FLOAT16)}
    for node in (n for n in model.graph.node if n.domain == ONNX_DOMAIN):
        index, elem_type = feature_input[node.op_type]
        assert types[node.input[index]] == elem_type, node.op_type
    inputs = all_inputs(3, seed=7)
    for name in ("boxes", "class_boxes", "scores"):  # the graph rounds them to float16 before NMS
        inputs[name] = inputs[name].half().float()
    tolerance = {name: 2e-2 for name in ROI_ALIGN_OUTPUTS + DEFORM_CONV_OUTPUTS + list(PS_ROI_ALIGN_OUTPUTS)}
    assert_matches_eager(make_session(model), inputs, atol={**{name: 0.0 for name in NMS_OUTPUTS}, **tolerance})
