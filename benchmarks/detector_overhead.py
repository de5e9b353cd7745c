"""What ``Detector`` adds to the backend: pre-processing and result conversion, against bare ``infer``.

The peer is the backend's own ``infer`` call on the prepared batch (normalised, padded tensor
and metas built beforehand): what eval-engine times. ``Detector`` is timed on the same images
as an application calls it, from decoded PIL images (resize, normalisation, padding, the
backend, NumPy results with class names) and from the files (plus decoding). The three calls
are interleaved per iteration so that drift on a shared machine hits all alike. Prints p50 per
call and the overhead (ms and ratio to bare infer); ``--out`` saves the rows as JSON.

    python benchmarks/detector_overhead.py work_dirs/quickstart/deploy/model.onnx
    python benchmarks/detector_overhead.py work_dirs/quickstart/epoch_3.pth \
        --config configs/retinanet_r18_fpn_synth.yaml
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from dettool.runtime.detector import Detector, read_image
from dettool.runtime.latency import percentile


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help=".onnx deploy graph, engine, or checkpoint (then --config)")
    ap.add_argument("--config", help="the checkpoint's config")
    ap.add_argument("--images", default="data/synth/val", help="folder of images (default: synthetic val)")
    ap.add_argument("--batches", default="1,8", help="batch sizes to time")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--iters", type=int, default=10)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()

    detector = Detector.load(args.model, args.config, device=args.device)
    batch_sizes = [int(b) for b in args.batches.split(",")]
    files = sorted(Path(args.images).glob("*.jpg"))[: max(batch_sizes) * 4]
    if len(files) < max(batch_sizes):
        raise SystemExit(f"{args.images}: needs at least {max(batch_sizes)} .jpg images")
    decoded = [read_image(f) for f in files]
    backend = detector.backend
    rows = []
    for b in batch_sizes:
        chunks = [list(range(i, i + b)) for i in range(0, len(files) - b + 1, b)]
        prepared = [detector.prepare([decoded[i] for i in c]) for c in chunks]
        times = {"bare": [], "pil": [], "files": []}
        for it in range(args.warmup + args.iters):
            k = it % len(chunks)
            images, metas = prepared[k]
            calls = {"bare": lambda: backend.infer(images, metas),
                     "pil": lambda: detector.predict([decoded[i] for i in chunks[k]]),
                     "files": lambda: detector.predict([files[i] for i in chunks[k]])}
            for name, call in calls.items():
                backend.synchronize()
                seconds = timed(lambda: (call(), backend.synchronize()))
                if it >= args.warmup:
                    times[name].append(seconds)
        p50 = {name: 1e3 * percentile(t, 50) for name, t in times.items()}
        rows.append({"batch": b, "bare_infer_ms": p50["bare"], "detector_pil_ms": p50["pil"],
                     "detector_files_ms": p50["files"], "overhead_pil_ms": p50["pil"] - p50["bare"],
                     "overhead_files_ms": p50["files"] - p50["bare"], "ratio_pil": p50["pil"] / p50["bare"],
                     "ratio_files": p50["files"] / p50["bare"]})

    print(f"\n{detector!r} on {args.device}, {torch.get_num_threads()} threads, images from {args.images}, "
          f"p50 of {args.iters} calls after {args.warmup} warm-up")
    print("| batch | bare infer ms | Detector (PIL) ms | overhead ms | ratio | Detector (files) ms | overhead ms "
          "| ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['batch']} | {r['bare_infer_ms']:.1f} | {r['detector_pil_ms']:.1f} | {r['overhead_pil_ms']:.1f} "
              f"| {r['ratio_pil']:.3f} | {r['detector_files_ms']:.1f} | {r['overhead_files_ms']:.1f} "
              f"| {r['ratio_files']:.3f} |")
    if args.out:
        Path(args.out).write_text(json.dumps({"model": args.model, "device": args.device, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
