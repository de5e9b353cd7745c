"""Inference latency: ONNX Runtime (CPU) against PyTorch eager (CPU), RetinaNet and Faster R-CNN.

For each model, the checkpoint (or a randomly initialised model when none is given) is exported
to a dynamic-batch ONNX deploy graph in both flavours: ``portable`` (standard ONNX ops, all native
ONNX Runtime kernels) and ``custom`` (dettool's ops, run in ONNX Runtime as onnxruntime-extensions
Python ops calling the PyTorch reference kernels). Each backend's ``infer`` (pre-processed batch
in, detections in original pixels out, the same work for both) is then timed on the same
preloaded synthetic val batches at batch 1 and batch 4, in one run, interleaved backend by
backend after warm-up. Prints p50 latency, throughput and the ratio ORT / PyTorch (below 1.0:
ONNX Runtime is faster).

    python benchmarks/onnxruntime_latency.py \
        --model retinanet=work_dirs/retinanet_r18_fpn_synth/epoch_10.pth \
        --model faster_rcnn=work_dirs/faster_rcnn_r18_fpn_synth/epoch_6.pth
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.io import atomic_save
from dettool.runtime.eval_engine import preload_batches
from dettool.runtime.latency import measure_latency
from dettool.runtime.onnxruntime_backend import OnnxRuntimeBackend
from dettool.runtime.torch_backend import TorchBackend
from dettool.trainer import builder

CONFIGS = {"retinanet": "configs/retinanet_r18_fpn_synth.yaml", "faster_rcnn": "configs/faster_rcnn_r18_fpn_synth.yaml"}


def checkpoint_for(name: str, given: str | None, tmp: Path) -> str:
    """The given checkpoint, or a randomly initialised model saved as one."""
    if given:
        return given
    cfg = load_config(CONFIGS[name])
    torch.manual_seed(0)
    path = tmp / f"{name}_random.pth"
    atomic_save({"model": builder.build_model(cfg).state_dict(), "meta": {}}, path)
    return str(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=[], metavar="NAME[=CKPT]",
                    help="retinanet and/or faster_rcnn, optionally with a checkpoint (default: both, random init)")
    ap.add_argument("--batches", default="1,4", help="batch sizes to time")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=8)
    args = ap.parse_args()
    models = [m.split("=", 1) + ([None] if "=" not in m else []) for m in args.model] or [["retinanet", None],
                                                                                         ["faster_rcnn", None]]
    batch_sizes = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, ckpt in models:
            cfg = load_config(CONFIGS[name], ["data.num_workers=0"])
            ckpt = checkpoint_for(name, ckpt, Path(tmp))
            print(f"[{name}] exporting portable and custom-op graphs ...", flush=True)
            backends = [TorchBackend.from_checkpoint(cfg, ckpt, "cpu")]
            for flavour in ("portable", "custom"):
                path, _ = export_onnx(cfg, ckpt, Path(tmp) / f"{name}_{flavour}.onnx", portable=flavour == "portable",
                                      dynamic_batch=True)
                backend = OnnxRuntimeBackend(path, providers=["CPUExecutionProvider"])
                backend.name = f"onnxruntime ({flavour})"
                backends.append(backend)
            dataset = builder.build_dataset(cfg, "val")
            for b in batch_sizes:
                batches = preload_batches(cfg, dataset, b, 4)
                stats = {be.name: measure_latency(be, batches, args.warmup, args.iters) for be in backends}
                base = stats["torch"]
                for be_name, s in stats.items():
                    rows.append((name, b, be_name, s.p50_ms, s.p90_ms, s.images_per_s, s.p50_ms / base.p50_ms))
    print(f"\nCPU inference latency, {torch.get_num_threads()} threads, synthetic val images (test scale "
          f"{load_config(CONFIGS['retinanet']).data.test_scale}), median of {args.iters} after {args.warmup} warm-up")
    print("| model | batch | backend | p50 ms | p90 ms | images/s | p50 ratio vs torch |")
    print("|---|---|---|---|---|---|---|")
    for name, b, be_name, p50, p90, ips, ratio in rows:
        print(f"| {name} | {b} | {be_name} | {p50:.1f} | {p90:.1f} | {ips:.2f} | {ratio:.3f} |")


if __name__ == "__main__":
    main()
