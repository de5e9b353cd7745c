"""One-plugin TensorRT engines (ONNX node -> TensorRT's parser -> engine) vs the torchvision
references. Tolerances as the CPU tests: NMS exact; float32 RoIAlign (both) 1e-5, deformable conv 1e-4;
float16 1e-3 (one float16 ulp).
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import torch

trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
if not hasattr(trt, "Builder"):  # a folder named tensorrt on sys.path, not the library
    sys.modules.pop("tensorrt", None)
    pytest.skip("TensorRT is not installed", allow_module_level=True)

from dettool_op_references import (  # noqa: E402
    reference_batched_nms,
    reference_modulated_deform_conv,
    reference_multi_level_roi_align,
    reference_ps_roi_align,
)
from dettool_trt_engine import (  # noqa: E402
    batched_nms_graph,
    build_engine,
    deserialize_engine,
    modulated_deform_conv_graph,
    multi_level_roi_align_graph,
    ps_roi_align_graph,
    run_engine,
)

from dettool.exporters.trt_plugin_lib import PLUGIN_NAMES  # noqa: E402

pytestmark = [pytest.mark.tensorrt, pytest.mark.gpu]

STRIDES = [4, 8, 16, 32]


def random_boxes(g, *shape, size=100.0):
    xy = torch.rand(*shape, 2, generator=g) * size
    wh = 1 + torch.rand(*shape, 2, generator=g) * (size / 2 - 1)
    return torch.cat([xy, xy + wh], dim=-1)


def test_build_info_names_this_tensorrt(build_info):
    assert build_info["plugin_namespace"] == "dettool" and build_info["plugin_version"] == "1"
    built_major = build_info["tensorrt_version"].split(".")[0]
    assert built_major == trt.__version__.split(".")[0], (build_info, trt.__version__)


def test_load_library_registers_the_creators(plugin_library):
    """IPluginRegistry.load_library (the other way to load the library; a fresh process, as this
    one has loaded it with ctypes) hands TensorRT the four creators and no duplicate."""
    script = textwrap.dedent(f"""
        import tensorrt as trt
        registry = trt.get_plugin_registry()
        handle = registry.load_library({str(plugin_library[0])!r})
        assert handle is not None, "load_library failed"
        getter = getattr(registry, "get_creator", None) or registry.get_plugin_creator
        for name in {list(PLUGIN_NAMES)!r}:
            assert getter(name, "1", "dettool") is not None, name
        print("ok")
        """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "ok" in result.stdout, result.stdout + result.stderr


@pytest.mark.parametrize("per_class", [False, True], ids=["shared-boxes", "boxes-per-class"])
def test_batched_nms_engine(plugin_library, per_class):
    c, k = 7, 50
    graph = batched_nms_graph(c, per_class, score_threshold=0.2, iou_threshold=0.5, max_output_boxes=k)
    box_shape = (lambda b, n: (b, n, c, 4)) if per_class else (lambda b, n: (b, n, 4))
    engine, plan = build_engine(graph.to_onnx(), {
        "boxes": (box_shape(1, 0), box_shape(2, 300), box_shape(4, 1000)),
        "scores": ((1, 0, c), (2, 300, c), (4, 1000, c))})
    g = torch.Generator().manual_seed(40)
    for b, n, thr in [(2, 300, 0.2), (4, 1000, 0.2), (1, 0, 0.2), (3, 20, 0.99)]:  # incl. no boxes, no candidates
        boxes = random_boxes(g, *box_shape(b, n)[:-1])
        scores = torch.rand(b, n, c, generator=g)
        if thr == 0.99:
            scores *= 0.5
        out = run_engine(engine, {"boxes": boxes, "scores": scores})
        want = reference_batched_nms(boxes, scores, 0.2, 0.5, k)
        got = [out[name].cpu() for name in ("num_dets", "det_boxes", "det_scores", "det_classes")]
        for name, x, y in zip(("num_dets", "det_boxes", "det_scores", "det_classes"), got, want):
            assert torch.equal(x, y.to(x.dtype)), f"{name} differs for B={b} N={n}"
    # The plan deserializes through the creator (getFieldsToSerialize -> createPlugin at runtime).
    again = run_engine(deserialize_engine(plan), {"boxes": boxes, "scores": scores})
    assert all(torch.equal(again[name], out[name]) for name in out)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
def test_multi_level_roi_align_engine(plugin_library, dtype):
    image, channels, out_size = (256, 320), 16, (7, 7)
    sizes = [(image[0] // s, image[1] // s) for s in STRIDES]
    graph = multi_level_roi_align_graph(dtype, channels, sizes, STRIDES, out_size, sampling_ratio=0,
                                        finest_scale=56, aligned=True)
    feat_profile = {f"feat_{i}": ((1, channels, h, w), (2, channels, h, w), (2, channels, h, w))
                    for i, (h, w) in enumerate(sizes)}
    engine, _ = build_engine(graph.to_onnx(), {"rois": ((0, 5), (200, 5), (1000, 5)), **feat_profile})
    g = torch.Generator().manual_seed(41)
    feats = [torch.randn(2, channels, h, w, generator=g).to(dtype) for h, w in sizes]
    side = torch.exp(torch.empty(500, 2).uniform_(0.7, 6.2, generator=g))
    x1 = torch.rand(500, generator=g) * image[1] - side[:, 0] / 4
    y1 = torch.rand(500, generator=g) * image[0] - side[:, 1] / 4
    rois = torch.stack([torch.randint(0, 2, (500,), generator=g).float(), x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1)
    for r in (rois, rois[:0]):
        feeds = {"rois": r, **{f"feat_{i}": f for i, f in enumerate(feats)}}
        got = run_engine(engine, feeds)["roi_feats"].cpu()
        want = reference_multi_level_roi_align(r, feats, STRIDES, out_size, 0, 56, True)
        tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-3, rtol=1e-3)
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("groups,deform_groups,stride", [(1, 1, (1, 1)), (2, 2, (2, 2))])
def test_modulated_deform_conv_engine(plugin_library, dtype, groups, deform_groups, stride):
    g = torch.Generator().manual_seed(42)
    c, co, (h, w), (kh, kw), padding, dilation = 16, 12, (20, 18), (3, 3), (1, 1), (1, 1)
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    weight = (torch.randn(co, c // groups, kh, kw, generator=g) * 0.2).to(dtype)
    bias = torch.randn(co, generator=g).to(dtype)
    graph = modulated_deform_conv_graph(weight, bias, (h, w), (ho, wo), stride, padding, dilation, groups,
                                        deform_groups)
    taps = deform_groups * kh * kw
    engine, _ = build_engine(graph.to_onnx(), {
        "input": ((1, c, h, w), (2, c, h, w), (4, c, h, w)),
        "offset": ((1, 2 * taps, ho, wo), (2, 2 * taps, ho, wo), (4, 2 * taps, ho, wo)),
        "mask": ((1, taps, ho, wo), (2, taps, ho, wo), (4, taps, ho, wo))})
    for b in (1, 3):
        feeds = {"input": torch.randn(b, c, h, w, generator=g).to(dtype),
                 "offset": (torch.randn(b, 2 * taps, ho, wo, generator=g) * 2).to(dtype),
                 "mask": torch.rand(b, taps, ho, wo, generator=g).to(dtype)}
        got = run_engine(engine, feeds)["output"].cpu()
        want = reference_modulated_deform_conv(feeds["input"], feeds["offset"], feeds["mask"], weight, bias,
                                               stride, padding, dilation)
        tol = dict(atol=1e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-3, rtol=1e-3)
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("k,sampling_ratio", [(7, 0), (3, 2)])
def test_ps_roi_align_engine(plugin_library, dtype, k, sampling_ratio):
    channels, (h, w), stride = 10, (32, 40), 16
    graph = ps_roi_align_graph(dtype, channels, k, 1 / stride, sampling_ratio)
    engine, plan = build_engine(graph.to_onnx(), {
        "features": ((1, channels * k * k, 8, 8), (2, channels * k * k, h, w), (2, channels * k * k, 64, 64)),
        "rois": ((0, 5), (200, 5), (1000, 5))})
    g = torch.Generator().manual_seed(43)
    features = torch.randn(2, channels * k * k, h, w, generator=g).to(dtype)
    side = torch.exp(torch.empty(300, 2).uniform_(0.7, 6.2, generator=g))
    x1 = torch.rand(300, generator=g) * w * stride - side[:, 0] / 4
    y1 = torch.rand(300, generator=g) * h * stride - side[:, 1] / 4
    rois = torch.stack([torch.randint(0, 2, (300,), generator=g).float(), x1, y1, x1 + side[:, 0], y1 + side[:, 1]], 1)
    edges = torch.tensor([[0, 40, 40, 40, 40], [1, 30, 10, 30, 90], [1, 120, 100, 20, 30], [2, 10, 10, 90, 70],
                          [0, -300, -300, -200, -200]], dtype=torch.float32)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-3, rtol=1e-3)
    for r in (torch.cat([rois, edges]), rois[:0]):
        got = run_engine(engine, {"features": features, "rois": r})["pooled"].cpu()
        assert got.dtype == dtype and got.shape == (len(r), channels, k, k)
        torch.testing.assert_close(got, reference_ps_roi_align(features, r, k, 1 / stride, sampling_ratio), **tol)
    again = run_engine(deserialize_engine(plan), {"features": features, "rois": rois})["pooled"]
    assert torch.equal(again.cpu(), run_engine(engine, {"features": features, "rois": rois})["pooled"].cpu())
