#!/usr/bin/env python3
"""The GPU check, without TensorRT: kernels, deploy graphs on CUDA vs the CPU, training-step time.

    python tests/gpu/check_gpu.py                      # everything on the GPU, < 10 min on an H200
    python tests/gpu/check_gpu.py --device cpu --quick # deploy + train parts on the CPU (development)

Parts (``--parts``, default all five on CUDA, ``deploy,train`` on the CPU):
  kernels  plugins_trt/*/*.cu built as a torch extension (~2-3 min) and compared with torchvision
           on CUDA in float32 / float16 (tests/gpu/check_kernels_cuda.py, tolerances there).
  deploy   every configs/*_synth.yaml detector, random weights (seed 0), 4 synthetic images
           (dettool's generator) at the config's test scale, score_thr 0.001: deploy graph and
           model.predict (the torch backend) on --device against the CPU, detections matched one to
           one (tests/gpu/deploy_graph_checks.py, tolerances there). Fast R-CNN: predict only.
  train    dettool's Faster R-CNN R-50-FPN (configs/faster_rcnn_r50_fpn_1x_coco.yaml, random init,
           no weights file) vs torchvision's fasterrcnn_resnet50_fpn(weights=None,
           weights_backbone=None) on one batch of 2 x 800 x 1333: ms/iter in float32 and in autocast
           float16 with a GradScaler, losses finite (tests/gpu/train_step_checks.py).
  syncbn   two torchrun ranks on the one GPU (gloo with CUDA tensors: NCCL takes one GPU per rank)
           train dettool's ResNet-18 with SyncBN for one step on half a batch each: running
           statistics and summed gradients equal plain BN's on the whole batch
           (tests/gpu/sync_bn_checks.py). CUDA only: PyTorch's SyncBatchNorm refuses CPU tensors.
  amp      dettool's trainer with train.amp=fp16 (RetinaNet R-18-FPN synth, a 16-image synthetic
           set at 160x128): one step (float16 autocast, GradScaler, finite loss, weights moved),
           then a 30-iteration run whose loss falls (tests/gpu/amp_checks.py). On the CPU it
           runs as bf16 (MixedPrecisionHook's rule).
--quick: 2 images at 128x96 for deploy, 1 x 128 x 160 and 2 steps for train (syncbn and amp as above).

Prints one pass/fail table, writes it to --out (default $OUT, else /tmp/dettool_gpu_check) as
check_gpu.json (every row with its numbers) and check_gpu.md. Exit status 0 when every row
passes, 1 when one fails, 2 when the check cannot run (no CUDA device for --device cuda, unknown
--parts / --detectors / --train-precisions). The report is rewritten after each part, so a run
stopped by a time limit still leaves the rows it has (``"complete": false`` in the JSON).
TF32 is off for the kernel and deploy parts; the train part runs with torch's defaults.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from check_table import Checker  # noqa: E402

PARTS = ("kernels", "deploy", "train", "syncbn", "amp")
CPU_PARTS = ("deploy", "train")  # the default on the CPU; amp can be asked for, syncbn and kernels need CUDA
# (deploy images, deploy test scale (None: the config's), train batch (n, h, w), warmup, timed steps)
FULL = dict(deploy_images=4, deploy_scale=None, train_batch=(2, 800, 1333), warmup=5, iters=20)
QUICK = dict(deploy_images=2, deploy_scale="128x96", train_batch=(1, 128, 160), warmup=0, iters=2)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"), help="where the checked runs happen")
    parser.add_argument("--quick", action="store_true", help="small sizes and few steps (development, CI)")
    parser.add_argument("--parts", default=None, help=f"comma-separated subset of {','.join(PARTS)}")
    parser.add_argument("--detectors", default=None,
                        help="deploy part: comma-separated config stems without _synth (default: all)")
    parser.add_argument("--train-precisions", default="fp32,amp", help="train part: fp32, amp or both")
    parser.add_argument("--out", type=Path, default=None, help="report folder (default $OUT or /tmp/dettool_gpu_check)")
    parser.add_argument("--build-dir", type=Path, default=None, help="extension build folder (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="show the compiler commands")
    return parser.parse_args(argv)


def kernel_part(checker: Checker, build_dir: Path, verbose: bool) -> None:
    from check_kernels_cuda import build_extension, dcn_checks, nms_checks, ps_roi_align_checks, roi_align_checks

    ext = None

    def build() -> str:
        nonlocal ext
        ext = build_extension(build_dir, verbose)
        return f"TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']} in {build_dir}"
    checker.run("build plugins_trt/*/*.cu as a torch extension", build)
    if ext is not None:
        nms_checks(ext, checker)
        roi_align_checks(ext, checker)
        dcn_checks(ext, checker)
        ps_roi_align_checks(ext, checker)


def run_part(checker: Checker, part) -> None:
    """Run a part's checks; an error outside its rows becomes a failed row of its own."""
    before = len(checker.results)
    try:
        part()
    except Exception as error:  # noqa: BLE001 - recorded as a failed row, the other parts still run
        def reraise(error: Exception = error) -> None:
            raise error
        checker.run(f"{checker.part} part stopped after {len(checker.results) - before} rows", reraise)


def environment(args: argparse.Namespace, parts: list[str]) -> dict:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                                timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]), "parts": parts, "quick": args.quick,
            "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or "cpu",
            "torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
            "git_commit": commit, "date": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = args.parts.split(",") if args.parts else list(PARTS if args.device == "cuda" else CPU_PARTS)
    if unknown := set(parts) - set(PARTS):
        print(f"--parts: unknown {sorted(unknown)}; choose from {','.join(PARTS)}", file=sys.stderr)
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device: nothing to check on --device cuda (use --device cpu for the deploy and train parts)",
              file=sys.stderr)
        return 2
    if cuda_only := [p for p in ("kernels", "syncbn") if p in parts and args.device != "cuda"]:
        print(f"--parts {','.join(cuda_only)} needs --device cuda", file=sys.stderr)
        return 2
    names = args.detectors.split(",") if args.detectors else None
    precisions = tuple(args.train_precisions.split(","))
    try:
        if "deploy" in parts:
            from deploy_graph_checks import select_configs

            select_configs(names)
        if unknown := set(precisions) - {"fp32", "amp"}:
            raise ValueError(f"--train-precisions: unknown {sorted(unknown)}; choose from fp32,amp")
    except ValueError as e:
        print(e, file=sys.stderr)
        return 2
    sizes = QUICK if args.quick else FULL
    device = torch.device(args.device)
    out_dir = args.out or Path(os.environ.get("OUT") or "/tmp/dettool_gpu_check")
    meta = environment(args, parts)
    print(f"torch {meta['torch']}, CUDA {meta['cuda']}, {meta['device']}; parts {','.join(parts)}", flush=True)
    start = time.perf_counter()
    checker = Checker()

    def report(final: bool = False) -> list[Path]:
        """The table so far as JSON + Markdown: a run stopped by a time limit still leaves its rows."""
        meta["seconds"] = round(time.perf_counter() - start, 1)
        meta["complete"] = final
        header = [f"`{meta['command']}`", "", f"{meta['device']}, torch {meta['torch']}, CUDA {meta['cuda']}, "
                  f"commit {meta['git_commit']}, {meta['date']}, {meta['seconds']} s"
                  + ("" if final else " (partial: the parts run so far)")]
        return checker.write(out_dir, "check_gpu", "dettool GPU check", header, meta)

    torch.backends.cuda.matmul.allow_tf32 = False  # kernels and deploy graphs compared in full float32
    torch.backends.cudnn.allow_tf32 = False
    if "kernels" in parts:
        checker.part = "kernels"
        build_dir = args.build_dir or Path(tempfile.mkdtemp(prefix="dettool_kernels_"))
        run_part(checker, lambda: kernel_part(checker, build_dir, args.verbose))
        report()
    if "deploy" in parts:
        from deploy_graph_checks import deploy_checks

        checker.part = "deploy"
        with tempfile.TemporaryDirectory(prefix="dettool_gpu_synth_") as root:
            run_part(checker, lambda: deploy_checks(checker, device, Path(root), sizes["deploy_images"],
                                                    sizes["deploy_scale"], names))
        report()
    if "train" in parts:
        from train_step_checks import train_checks

        torch.backends.cudnn.allow_tf32 = True  # torch's defaults, as a training run has them
        checker.part = "train"
        n, h, w = sizes["train_batch"]
        run_part(checker, lambda: train_checks(checker, device, n, h, w, sizes["warmup"], sizes["iters"], precisions))
        report()
    if "syncbn" in parts:
        from sync_bn_checks import sync_bn_checks

        checker.part = "syncbn"
        with tempfile.TemporaryDirectory(prefix="dettool_gpu_syncbn_") as root:
            run_part(checker, lambda: sync_bn_checks(checker, device, Path(root)))
        report()
    if "amp" in parts:
        from amp_checks import amp_checks

        checker.part = "amp"
        with tempfile.TemporaryDirectory(prefix="dettool_gpu_amp_") as root:
            run_part(checker, lambda: amp_checks(checker, device, Path(root)))

    paths = report(final=True)
    print()
    print(checker.table())
    print(f"{meta['seconds']:.0f} s; wrote {' and '.join(str(p) for p in paths)}")
    return 0 if checker.ok else 1


if __name__ == "__main__":
    sys.exit(main())
