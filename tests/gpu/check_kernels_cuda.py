#!/usr/bin/env python3
"""Check the plugins' CUDA kernels against torchvision on a GPU, without TensorRT.

Builds plugins_trt/*/*.cu with tests/gpu/kernels_binding.cpp as a torch CUDA extension (for this
GPU's architecture only), runs every kernel in float32 and float16 on random and edge-case inputs,
compares with torchvision (on CUDA, and on the CPU where its CUDA kernels order ties differently),
prints a pass/fail table and exits 1 if any check fails (2 if it cannot run).

    python tests/gpu/check_kernels_cuda.py               # build + check (needs a GPU, nvcc)
    python tests/gpu/check_kernels_cuda.py --build-only  # build and import only (no GPU needed)
    python tests/gpu/check_gpu.py                        # these checks, then deploy graphs and training
                                                         # step on CUDA vs CPU / torchvision (check_gpu.py)

Needs torch with CUDA, torchvision and nvcc (CUDA_HOME); no internet. Tolerances:
  NMS                  exact vs the spec's reference (torchvision nms per class on the CPU);
                       vs torchvision's CUDA batched_nms: same counts, <= 0.5 % rows differing
  RoIAlign float32     atol 1e-5, rtol 1e-5   (FMA contraction in the interpolation sums; also with
                                              roi_scale_factor 1.3, rescaled in float32 without FMA;
                                              PS RoIAlign too)
  DeformConv float32   atol 1e-4, rtol 1e-4   (other summation order than im2col + GEMM)
  float16 (both)       atol 1e-3, rtol 1e-3   (one float16 ulp: math in float32, rounded once)
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PLUGINS = REPO / "plugins_trt"
sys.path.insert(0, str(REPO / "tests" / "plugins"))
sys.path.insert(0, str(HERE))

from check_table import Checker  # noqa: E402
from dettool_op_references import (  # noqa: E402
    reference_batched_nms,
    reference_modulated_deform_conv,
    reference_multi_level_roi_align,
    reference_ps_roi_align,
    torchvision_batched_nms,
)

FP32_ROI = dict(atol=1e-5, rtol=1e-5)
FP32_DCN = dict(atol=1e-4, rtol=1e-4)
FP16 = dict(atol=1e-3, rtol=1e-3)
STRIDES = [4, 8, 16, 32]


def build_extension(build_dir: Path, verbose: bool = False):
    """Compile the four kernels and the binding for this machine's GPU (or sm_90 without one)."""
    from torch.utils.cpp_extension import load

    if "TORCH_CUDA_ARCH_LIST" not in os.environ:
        if torch.cuda.is_available():
            major, minor = torch.cuda.get_device_capability()
            os.environ["TORCH_CUDA_ARCH_LIST"] = f"{major}.{minor}"
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = "9.0"
    sources = [HERE / "kernels_binding.cpp"] + sorted(PLUGINS.glob("*/*.cu"))
    build_dir.mkdir(parents=True, exist_ok=True)
    return load(name="dettool_kernels_check", sources=[str(s) for s in sources], extra_include_paths=[str(PLUGINS)],
                extra_cflags=["-O2"], extra_cuda_cflags=["-O3"],
                build_directory=str(build_dir), verbose=verbose)


def max_error(got: torch.Tensor, want: torch.Tensor, atol: float, rtol: float) -> str:
    """assert_close, then the worst absolute difference as the detail."""
    assert got.shape == want.shape and got.dtype == want.dtype, f"{got.shape} {got.dtype} vs {want.shape} {want.dtype}"
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol)
    diff = (got.float() - want.float()).abs()
    return f"max |diff| {diff.max().item() if diff.numel() else 0.0:.2e}"


def assert_same_detections(got, want) -> None:
    names = ("num_dets", "det_boxes", "det_scores", "det_classes")
    for name, g, w in zip(names, got, want):
        g = g.cpu()
        assert torch.equal(g, w.to(g.dtype)), f"{name} differs"


# --------------------------------------------------------------------------------------------
# Inputs
# --------------------------------------------------------------------------------------------

def random_boxes(g: torch.Generator, *shape: int, size: float = 100.0) -> torch.Tensor:
    xy = torch.rand(*shape, 2, generator=g) * size
    wh = 1 + torch.rand(*shape, 2, generator=g) * (size / 2 - 1)
    return torch.cat([xy, xy + wh], dim=-1)


def pyramid(g: torch.Generator, batch: int, channels: int, image: tuple[int, int], strides=STRIDES):
    return [torch.randn(batch, channels, image[0] // s, image[1] // s, generator=g) for s in strides]


def random_rois(g: torch.Generator, num: int, batch: int, image: tuple[int, int], max_side: float = 500.0):
    side = torch.exp(torch.empty(num, 2).uniform_(float(torch.log(torch.tensor(2.0))),
                                                  float(torch.log(torch.tensor(max_side))), generator=g))
    x1 = torch.rand(num, generator=g) * image[1] - side[:, 0] / 4
    y1 = torch.rand(num, generator=g) * image[0] - side[:, 1] / 4
    index = torch.randint(0, batch, (num,), generator=g).float()
    return torch.stack([index, x1, y1, x1 + side[:, 0], y1 + side[:, 1]], dim=1)


def dcn_inputs(g: torch.Generator, batch=2, channels=16, size=(20, 18), out_channels=24, kernel=(3, 3),
               stride=(1, 1), padding=(1, 1), dilation=(1, 1), groups=1, deform_groups=1, offset_scale=2.0):
    h, w = size
    kh, kw = kernel
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    taps = deform_groups * kh * kw
    tensors = dict(input=torch.randn(batch, channels, h, w, generator=g),
                   offset=torch.randn(batch, 2 * taps, ho, wo, generator=g) * offset_scale,
                   mask=torch.rand(batch, taps, ho, wo, generator=g),
                   weight=torch.randn(out_channels, channels // groups, kh, kw, generator=g) * 0.2,
                   bias=torch.randn(out_channels, generator=g))
    attrs = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, deform_groups=deform_groups)
    return tensors, attrs


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------

def nms_checks(ext, c: Checker) -> None:
    def close_to_torchvision_cuda(got, boxes, scores, thr, iou, k) -> int:
        """The spec's one-liner run by torchvision's CUDA kernels: equal counts, and the same kept
        (class, box, score) rows but for at most 0.5 % (its IoU may round differently from the
        exact one on near-ties). Orders are not compared: batched_nms orders equal scores
        arbitrarily, and torch.rand repeats values among hundreds of thousands."""
        want = [w.cpu() for w in torchvision_batched_nms(boxes.cuda(), scores.cuda(), thr, iou, k)]
        assert torch.equal(got[0].cpu(), want[0]), "num_dets differs from torchvision CUDA"
        missing = 0
        for b, n in enumerate(want[0].tolist()):
            def rows(out):
                return {(int(out[3][b, r]), *out[1][b, r].tolist(), float(out[2][b, r])) for r in range(n)}
            missing += len(rows([t.cpu() for t in got]) - rows(want))
        total = max(int(want[0].sum()), 1)
        assert missing <= 0.005 * total, f"{missing} of {total} kept rows differ from torchvision CUDA"
        return missing

    def compare(boxes, scores, thr, iou, k, also_torchvision_cuda=False):
        got = ext.batched_nms(boxes.cuda().contiguous(), scores.cuda().contiguous(), thr, iou, k)
        assert_same_detections(got, reference_batched_nms(boxes, scores, thr, iou, k))  # exact
        detail = f"num_dets {got[0].tolist()[:4]}"
        if also_torchvision_cuda:
            differing = close_to_torchvision_cuda(got, boxes, scores, thr, iou, k)
            detail += f", rows differing from torchvision CUDA: {differing}"
        return detail

    g = torch.Generator().manual_seed(0)
    c.run("nms random shared boxes B=4 N=1000 C=20",
          lambda: compare(random_boxes(g, 4, 1000), torch.rand(4, 1000, 20, generator=g), 0.3, 0.5, 100, True))
    c.run("nms random per-class boxes B=2 N=500 C=8",
          lambda: compare(random_boxes(g, 2, 500, 8), torch.rand(2, 500, 8, generator=g), 0.2, 0.6, 150, True))

    def ties():
        boxes = random_boxes(g, 2, 400, size=40.0)
        boxes[:, 200:] = boxes[:, :200]
        scores = torch.randint(1, 5, (2, 400, 3), generator=g).float() / 4
        return compare(boxes, scores, 0.0, 0.6, 300)
    c.run("nms tied scores and duplicate boxes", ties)

    def strict_thresholds():
        boxes = torch.tensor([[[0, 0, 3, 1], [1, 0, 4, 1], [1, 0, 4, 1], [5, 5, 5, 5], [5, 5, 5, 5]]],
                             dtype=torch.float32)
        scores = torch.tensor([[[0.9], [0.8], [0.25], [0.7], [0.6]]])
        compare(boxes, scores, 0.25, 0.5, 5)
        return compare(boxes, scores, 0.25, 0.4999, 5)
    c.run("nms IoU == threshold, score == threshold, zero-area", strict_thresholds)

    c.run("nms K > candidates", lambda: compare(random_boxes(g, 3, 6), torch.rand(3, 6, 2, generator=g), 0.0, 0.5, 64))
    c.run("nms zero candidates", lambda: compare(random_boxes(g, 2, 50), torch.rand(2, 50, 4, generator=g), 1.0, 0.5,
                                                 10))
    c.run("nms no boxes (N=0)", lambda: compare(random_boxes(g, 2, 0), torch.rand(2, 0, 4, generator=g), 0.1, 0.5, 10))
    c.run("nms no images (B=0)", lambda: compare(random_boxes(g, 0, 5), torch.rand(0, 5, 4, generator=g), 0.1, 0.5, 10))

    def many():
        boxes = random_boxes(g, 1, 4000, size=800.0)
        scores = torch.rand(1, 4000, 80, generator=g)
        detail = compare(boxes, scores, 0.0, 0.65, 300, also_torchvision_cuda=True)  # 320,000 candidates
        boxes, scores = boxes.cuda(), scores.cuda()
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(5):
            ext.batched_nms(boxes, scores, 0.0, 0.65, 300)
        torch.cuda.synchronize()
        return f"{detail}; {1e3 * (time.perf_counter() - start) / 5:.2f} ms/call"
    c.run("nms 320k candidates vs torchvision CUDA", many)


def roi_align_checks(ext, c: Checker) -> None:
    g = torch.Generator().manual_seed(1)

    def compare(rois, feats, dtype, strides=STRIDES, out=(7, 7), sampling=0, finest=56, aligned=True, cpu=False,
                factor=1.0):
        feats = [f.to(dtype) for f in feats]
        got = ext.multi_level_roi_align(rois.cuda(), [f.cuda() for f in feats], strides, out[0], out[1], sampling,
                                        finest, aligned, factor)
        device = "cpu" if cpu else "cuda"
        want = reference_multi_level_roi_align(rois.to(device), [f.to(device) for f in feats], strides, out, sampling,
                                               finest, aligned, factor)
        tol = FP32_ROI if dtype == torch.float32 else FP16
        return max_error(got.cpu(), want.cpu(), **tol)

    image = (512, 640)
    for dtype in (torch.float32, torch.float16):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        for aligned in (True, False):
            for sampling in (0, 2):
                c.run(f"roi_align {tag} random aligned={int(aligned)} sampling={sampling}",
                      lambda: compare(random_rois(g, 1000, 2, image), pyramid(g, 2, 64, image), dtype,
                                      sampling=sampling, aligned=aligned))
        c.run(f"roi_align {tag} vs torchvision CPU",
              lambda: compare(random_rois(g, 300, 2, image), pyramid(g, 2, 16, image), dtype, cpu=True))
        c.run(f"roi_align {tag} 5 levels, 5x3 output",
              lambda: compare(random_rois(g, 300, 1, (256, 256), 900.0), pyramid(g, 1, 8, (256, 256), [4, 8, 16, 32,
                                                                                                       64]),
                              dtype, [4, 8, 16, 32, 64], (5, 3), finest=28))

        def edges():
            rois = torch.tensor([[0, -300, -300, -200, -200], [0, 900, 900, 1000, 950], [0, -20, -20, 30, 30],
                                 [1, 600, 480, 700, 560], [0, 10, 10, 10, 10], [1, 0, 0, 20000, 20000],
                                 [0, 30, 30, 10, 50], [2, 0, 0, 50, 50], [-1, 0, 0, 50, 50], [1.7, 0, 0, 50, 50]],
                                dtype=torch.float32)
            return compare(rois, pyramid(g, 2, 8, image), dtype)
        c.run(f"roi_align {tag} outside / degenerate / bad batch index", edges)
        c.run(f"roi_align {tag} no RoIs", lambda: compare(torch.zeros(0, 5), pyramid(g, 2, 8, image), dtype))

        # roi_scale_factor (Double-Head R-CNN): levels of the RoIs as given, pooling of the rescaled ones.
        for aligned, sampling in ((True, 2), (True, 0), (False, 0)):
            c.run(f"roi_align {tag} roi_scale_factor 1.3 aligned={int(aligned)} sampling={sampling}",
                  lambda: compare(random_rois(g, 1000, 2, image), pyramid(g, 2, 64, image), dtype, sampling=sampling,
                                  aligned=aligned, factor=1.3))
        c.run(f"roi_align {tag} roi_scale_factor 1.3 vs torchvision CPU",
              lambda: compare(random_rois(g, 300, 2, image), pyramid(g, 2, 16, image), dtype, cpu=True, factor=1.3))

        def rescaled_edges():
            rois = torch.tensor([[0, -300, -300, -200, -200], [0, 0, 0, 40, 30], [1, 600, 480, 640, 512],
                                 [0, 10, 10, 10, 10], [0, 30, 30, 10, 50], [1, 30, 30, 10, 10], [2, 0, 0, 50, 50],
                                 [0, 8, 8, 119.9, 119.9], [1, 4, 4, 227.9, 227.9], [0, 0, 0, 640, 512]],
                                dtype=torch.float32)
            return compare(rois, pyramid(g, 2, 8, image), dtype, factor=1.3)
        c.run(f"roi_align {tag} roi_scale_factor 1.3 borders / degenerate / level boundaries", rescaled_edges)


def ps_roi_align_checks(ext, c: Checker) -> None:
    g = torch.Generator().manual_seed(3)

    def compare(features, rois, k, scale, sampling, dtype, cpu=False):
        features = features.to(dtype)
        got = ext.ps_roi_align(features.cuda(), rois.cuda(), k, scale, sampling)
        device = "cpu" if cpu else "cuda"
        want = reference_ps_roi_align(features.to(device), rois.to(device), k, scale, sampling)
        return max_error(got.cpu(), want.cpu(), **(FP32_ROI if dtype == torch.float32 else FP16))

    image = (512, 640)

    def features_for(batch, channels, k, stride=16):
        return torch.randn(batch, channels * k * k, image[0] // stride, image[1] // stride, generator=g)

    for dtype in (torch.float32, torch.float16):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        for k in (1, 3, 7):
            for sampling in (0, 2):
                c.run(f"ps_roi_align {tag} random k={k} sampling={sampling}",
                      lambda: compare(features_for(2, 21, k), random_rois(g, 1000, 2, image), k, 1 / 16, sampling,
                                      dtype))
        c.run(f"ps_roi_align {tag} R-FCN size (C=81, k=7, 300 RoIs) vs torchvision CPU",
              lambda: compare(features_for(1, 81, 7), random_rois(g, 300, 1, image), 7, 1 / 16, 0, dtype, cpu=True))

        def edges():
            rois = torch.tensor([[0, -300, -300, -200, -200], [0, 900, 900, 1000, 950], [0, -20, -20, 30, 30],
                                 [1, 600, 480, 700, 560], [0, 10, 10, 10, 10], [1, 30, 10, 30, 90],
                                 [1, 120, 100, 20, 30], [0, 0, 0, 20000, 20000], [2, 0, 0, 50, 50],
                                 [-1, 0, 0, 50, 50], [1.7, 0, 0, 50, 50]], dtype=torch.float32)
            return compare(features_for(2, 4, 3, stride=8), rois, 3, 1 / 8, 0, dtype)
        c.run(f"ps_roi_align {tag} outside / zero-size / inverted / bad batch index", edges)
        c.run(f"ps_roi_align {tag} no RoIs",
              lambda: compare(features_for(2, 4, 7), torch.zeros(0, 5), 7, 1 / 16, 0, dtype))


def dcn_checks(ext, c: Checker) -> None:
    g = torch.Generator().manual_seed(2)
    cases = {
        "3x3": dict(),
        "stride2 dil2 pad2": dict(stride=(2, 2), dilation=(2, 2), padding=(2, 2)),
        "groups2 deform_groups2": dict(groups=2, deform_groups=2),
        "deform_groups4": dict(deform_groups=4),
        "3x2 kernel, stride (2, 1)": dict(kernel=(3, 2), stride=(2, 1), padding=(1, 0), size=(17, 23)),
        "1x1": dict(kernel=(1, 1), padding=(0, 0)),
        "C=256 Co=256 50x68 (RetinaNet-size)": dict(channels=256, out_channels=256, size=(50, 68), batch=2),
        "large offsets": dict(offset_scale=15.0),
        "B=0": dict(batch=0),
    }

    def compare(case, dtype):
        tensors, attrs = dcn_inputs(g, **cases[case])
        tensors = {k: v.to(dtype).cuda() for k, v in tensors.items()}
        got = ext.modulated_deform_conv(*tensors.values(), list(attrs["stride"]), list(attrs["padding"]),
                                        list(attrs["dilation"]), attrs["groups"], attrs["deform_groups"])
        want = reference_modulated_deform_conv(**tensors, stride=attrs["stride"], padding=attrs["padding"],
                                               dilation=attrs["dilation"])
        return max_error(got, want, **(FP32_DCN if dtype == torch.float32 else FP16))

    for dtype in (torch.float32, torch.float16):
        tag = "fp32" if dtype == torch.float32 else "fp16"
        for case in cases:
            c.run(f"deform_conv {tag} {case}", lambda: compare(case, dtype))

    def speed():
        tensors, attrs = dcn_inputs(g, channels=256, out_channels=256, size=(100, 168), batch=1)
        tensors = {k: v.cuda() for k, v in tensors.items()}
        args = (*tensors.values(), [1, 1], [1, 1], [1, 1], 1, 1)
        ext.modulated_deform_conv(*args)
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10):
            ext.modulated_deform_conv(*args)
        torch.cuda.synchronize()
        ours = 1e3 * (time.perf_counter() - start) / 10
        start = time.perf_counter()
        for _ in range(10):
            reference_modulated_deform_conv(**tensors, stride=(1, 1), padding=(1, 1), dilation=(1, 1))
        torch.cuda.synchronize()
        theirs = 1e3 * (time.perf_counter() - start) / 10
        return f"256->256 3x3 at 100x168: {ours:.2f} ms (torchvision {theirs:.2f} ms)"
    c.run("deform_conv fp32 timing", speed)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build-only", action="store_true", help="build and import the extension, then exit")
    parser.add_argument("--build-dir", type=Path, default=None, help="extension build folder (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    args = parser.parse_args()

    if not args.build_only and not torch.cuda.is_available():
        print("no CUDA device: nothing to check (use --build-only to only compile)", file=sys.stderr)
        return 2
    build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="dettool_kernels_"))
    start = time.perf_counter()
    try:
        ext = build_extension(build_dir, args.verbose)
    except Exception as e:  # noqa: BLE001
        print(f"building the extension failed: {e}", file=sys.stderr)
        return 2
    print(f"built the kernels for TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} in "
          f"{time.perf_counter() - start:.0f} s ({build_dir})", flush=True)
    if args.build_only:
        return 0

    torch.backends.cuda.matmul.allow_tf32 = False  # torchvision's deform_conv2d GEMM in full float32
    torch.backends.cudnn.allow_tf32 = False
    print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.get_device_name()}", flush=True)
    checker = Checker("kernels")
    nms_checks(ext, checker)
    roi_align_checks(ext, checker)
    dcn_checks(ext, checker)
    ps_roi_align_checks(ext, checker)
    print()
    print(checker.table())
    return 0 if all(r.ok for r in checker.results) else 1


if __name__ == "__main__":
    sys.exit(main())
