"""Export of the dettool ops to ONNX (custom and portable flavours), run in ONNX Runtime.

Each tiny module is exported once per flavour (module-scoped fixture, about 1.5 s each) with a
dynamic batch, then run through ``runtime.ort_custom_ops.make_session`` at batch 1 and 3 and
compared with the eager reference.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import onnx
import pytest
import torch
from torch import nn
from torch.export import Dim

from dettool.exporters.onnx_ops import translation_table
from dettool.ops import ONNX_DOMAIN, ONNX_OP_NAMES, batched_nms, modulated_deform_conv, multi_level_roi_align
from dettool.runtime.ort_custom_ops import make_session

STRIDES = [4, 8, 16]
K = 30


class NMSModule(nn.Module):
    """Shared-box and per-class-box NMS side by side."""

    def forward(self, boxes, class_boxes, scores):
        return (*batched_nms(boxes, scores, 0.2, 0.5, K), *batched_nms(class_boxes, scores, 0.2, 0.5, K))


class RoIAlignModule(nn.Module):
    """Aligned with 2x2 sampling, and not aligned with adaptive sampling."""

    def forward(self, rois, f0, f1, f2):
        return (multi_level_roi_align(rois, [f0, f1, f2], 7, 7, STRIDES, 2, 56, True),
                multi_level_roi_align(rois, [f0, f1, f2], 5, 3, STRIDES, 0, 56, False))


class DeformConvModule(nn.Module):
    """DCNv2 with offsets and masks predicted from the input (stride 2, groups 2, deform groups 2)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.offset_mask = nn.Conv2d(4, 3 * 2 * 9, 3, stride=2, padding=1)
        self.weight = nn.Parameter(torch.randn(6, 2, 3, 3) * 0.3)
        self.bias = nn.Parameter(torch.randn(6))

    def forward(self, x):
        out = self.offset_mask(x)
        offset, mask = out[:, :36], out[:, 36:].sigmoid()
        return modulated_deform_conv(x, offset, mask, self.weight, self.bias, [2, 2], [1, 1], [1, 1], 2, 2)


def nms_inputs(batch: int, num_boxes: int = 50, num_classes: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(batch, num_boxes, num_classes + 1, 2, generator=g) * 100
    wh = torch.rand(batch, num_boxes, num_classes + 1, 2, generator=g) * 60 + 1
    boxes = torch.cat([xy, xy + wh], dim=-1)
    scores = torch.rand(batch, num_boxes, num_classes, generator=g)
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


@dataclass
class Case:
    module: nn.Module
    inputs: Callable[..., dict[str, torch.Tensor]]
    dynamic_shapes: dict
    output_names: list[str]
    dettool_ops: list[str]


def cases() -> dict[str, Case]:
    b = Dim("batch")
    n = Dim("num_boxes")
    return {
        "nms": Case(NMSModule(), nms_inputs,
                    {"boxes": {0: b, 1: n}, "class_boxes": {0: b, 1: n}, "scores": {0: b, 1: n}},
                    ["num_dets", "det_boxes", "det_scores", "det_classes",
                     "num_dets_c", "det_boxes_c", "det_scores_c", "det_classes_c"],
                    [ONNX_OP_NAMES["batched_nms"]] * 2),
        "roi_align": Case(RoIAlignModule(), roi_align_inputs,
                          {"rois": {0: Dim("num_rois")},
                           **{f"f{i}": {0: b, 2: Dim(f"h{i}"), 3: Dim(f"w{i}")} for i in range(len(STRIDES))}},
                          ["pooled", "pooled_not_aligned"], [ONNX_OP_NAMES["multi_level_roi_align"]] * 2),
        "deform_conv": Case(DeformConvModule(), deform_conv_inputs, {"x": {0: b, 2: Dim("h"), 3: Dim("w")}},
                            ["out"], [ONNX_OP_NAMES["modulated_deform_conv"]]),
    }


CASES = cases()


FLAVOURS = ("custom", "portable")
ALL = [pytest.param(name, flavour, id=f"{name}-{flavour}") for name in CASES for flavour in FLAVOURS]


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    """``export(name, flavour) -> Path`` of the exported ``.onnx``, each exported once per module."""
    paths: dict[tuple[str, str], Path] = {}

    def get(name: str, flavour: str) -> Path:
        if (name, flavour) not in paths:
            case = CASES[name]
            inputs = case.inputs(2)
            program = torch.onnx.export(case.module.eval(), tuple(inputs.values()), dynamo=True, opset_version=19,
                                        dynamic_shapes=tuple(case.dynamic_shapes[k] for k in inputs),
                                        input_names=list(inputs), output_names=case.output_names,
                                        custom_translation_table=translation_table(portable=flavour == "portable"))
            paths[name, flavour] = tmp_path_factory.mktemp("onnx") / f"{name}-{flavour}.onnx"
            onnx.save(program.model_proto, paths[name, flavour])
        return paths[name, flavour]

    return get


def run_and_compare(session, case: Case, inputs: dict[str, torch.Tensor], atol: float = 1e-5) -> None:
    with torch.no_grad():
        expected = case.module(*inputs.values())
    expected = expected if isinstance(expected, tuple) else (expected,)
    outputs = session.run(None, {k: v.numpy() for k, v in inputs.items()})
    assert len(outputs) == len(expected)
    for name, out, ref in zip(case.output_names, outputs, expected):
        assert out.dtype == ref.numpy().dtype, name
        assert out.shape == tuple(ref.shape), name
        if out.dtype.kind == "f":
            np.testing.assert_allclose(out, ref.numpy(), rtol=1e-5, atol=atol, err_msg=name)
        else:
            np.testing.assert_array_equal(out, ref.numpy(), err_msg=name)


@pytest.mark.parametrize("name, flavour", ALL)
def test_model_passes_the_full_checker_with_dynamic_batch(export, name: str, flavour: str) -> None:
    model = onnx.load(export(name, flavour))
    onnx.checker.check_model(model, full_check=True)
    for value in model.graph.input:
        first_dim = value.type.tensor_type.shape.dim[0]
        assert first_dim.dim_param and not first_dim.HasField("dim_value"), value.name


@pytest.mark.parametrize("name, flavour", ALL)
def test_flavour_decides_the_nodes(export, name: str, flavour: str) -> None:
    case, model = CASES[name], onnx.load(export(name, flavour))
    dettool_nodes = [n for n in model.graph.node if n.domain == ONNX_DOMAIN]
    if flavour == "custom":
        assert [n.op_type for n in dettool_nodes] == case.dettool_ops
        for node in dettool_nodes:
            attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
            assert attrs["plugin_namespace"] == b"dettool" and attrs["plugin_version"] == b"1"
        assert (ONNX_DOMAIN, 1) in [(o.domain, o.version) for o in model.opset_import]
    else:
        assert {n.domain for n in model.graph.node} == {""}
        assert [(o.domain, o.version) for o in model.opset_import] == [("", 19)]


@pytest.mark.parametrize("name, flavour", ALL)
def test_onnxruntime_matches_eager_at_batch_1_and_3(export, name: str, flavour: str) -> None:
    session = make_session(export(name, flavour))
    for batch in (1, 3):
        run_and_compare(session, CASES[name], CASES[name].inputs(batch, seed=batch))


def nms_edge_inputs() -> list[dict[str, torch.Tensor]]:
    quiet = nms_inputs(2)
    # nothing above the 0.2 threshold: scores below it or exactly at it
    quiet["scores"] = torch.where(quiet["scores"] > 0.5, torch.tensor(0.2), quiet["scores"] * 0.2)
    ties = nms_inputs(3, num_boxes=40, seed=5)  # equal scores: smaller n * C + c first, in every runtime
    ties["scores"] = torch.randint(0, 5, ties["scores"].shape, generator=torch.Generator().manual_seed(5)) / 4.0
    return [nms_inputs(2, num_boxes=0),  # N = 0: TopK's k = 0, all rows padding
            nms_inputs(2, num_boxes=4),  # N * C = 12 < K
            quiet, ties]


def roi_align_edge_inputs() -> list[dict[str, torch.Tensor]]:
    empty = roi_align_inputs(2)
    empty["rois"] = empty["rois"][:0]
    one_level = roi_align_inputs(2)
    one_level["rois"] = torch.tensor([[1, 10.0, 10, 40, 30], [0, 100, 80, 104, 90]])
    invalid = roi_align_inputs(2)  # zeros: negative area, batch index -1 or 2; -0.5 and 1.9 truncate
    invalid["rois"] = torch.tensor([[0, 50.0, 10, 20, 40], [1, 50, 40, 20, 10], [-1, 10, 10, 40, 40],
                                    [2, 10, 10, 40, 40], [-0.5, 10, 10, 40, 40], [1.9, 10, 10, 40, 40]])
    return [empty, one_level, invalid]


def deform_conv_edge_inputs() -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(3)
    return [{"x": torch.randn(2, 4, 1, 1, generator=g)}, {"x": torch.randn(1, 4, 2, 3, generator=g) * 5}]


EDGE_INPUTS = {"nms": nms_edge_inputs, "roi_align": roi_align_edge_inputs, "deform_conv": deform_conv_edge_inputs}


@pytest.mark.parametrize("name, flavour", ALL)
def test_edge_cases_in_onnxruntime(export, name: str, flavour: str) -> None:
    session = make_session(export(name, flavour))
    for inputs in EDGE_INPUTS[name]():
        run_and_compare(session, CASES[name], inputs)


@pytest.mark.parametrize("name", list(CASES))
def test_custom_model_in_float16(export, name: str) -> None:
    """FP16 graph (onnxruntime's converter; NMS kept in float32, RoIAlign / DCN on float16 inputs):
    within 2e-2 of the eager float32 reference (features of magnitude ~1-4)."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    case = CASES[name]
    model = convert_float_to_float16(onnx.load(export(name, "custom")), keep_io_types=True,
                                     op_block_list=[ONNX_OP_NAMES["batched_nms"]])
    types = {v.name: v.type.tensor_type.elem_type for v in [*model.graph.input, *model.graph.value_info]}
    feature_input = {ONNX_OP_NAMES["batched_nms"]: (1, onnx.TensorProto.FLOAT),
                     ONNX_OP_NAMES["multi_level_roi_align"]: (1, onnx.TensorProto.FLOAT16),
                     ONNX_OP_NAMES["modulated_deform_conv"]: (0, onnx.TensorProto.FLOAT16)}
    for node in (n for n in model.graph.node if n.domain == ONNX_DOMAIN):
        index, elem_type = feature_input[node.op_type]
        assert types[node.input[index]] == elem_type, node.op_type
    session = make_session(model)
    inputs = case.inputs(3, seed=7)
    if name == "nms":  # NMS sees the inputs rounded to float16 and is then exact
        run_and_compare(session, case, {k: v.half().float() for k, v in inputs.items()}, atol=0)
    else:
        run_and_compare(session, case, inputs, atol=2e-2)
