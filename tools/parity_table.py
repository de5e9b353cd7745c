"""Export trained detectors in every ONNX flavour and run eval-engine on each: one parity table.

For each ``CONFIG=CHECKPOINT`` pair: ``dettool export --to onnx`` in the custom-op, portable and
FP16 flavours (dynamic batch), then ``eval-engine`` on ONNX Runtime (CPU) against the PyTorch
model on the config's val split. Writes each report beside its model and prints (and saves as
``OUT/parity_table.md`` and ``.json``) the table of AP per backend and flavour with the parity
verdicts. Exit status 1 when any check fails.

    python tools/parity_table.py --out work_dirs/parity \
        configs/retinanet_r18_fpn_synth.yaml=work_dirs/retinanet_r18_fpn_synth/epoch_10.pth ...
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dettool.config import load_config
from dettool.exporters.torch2onnx import export_onnx
from dettool.runtime.eval_engine import evaluate_engine

FLAVOURS = {"custom": {}, "portable": {"portable": True}, "fp16": {"fp16": True}}


def row_name(cfg_path: str) -> str:
    """The config's file name, or its run folder's for a run's saved ``config.yaml``."""
    path = Path(cfg_path)
    return path.parent.name if path.stem == "config" else path.stem


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pairs", nargs="+", metavar="CONFIG=CHECKPOINT")
    ap.add_argument("--out", required=True, help="folder for the models, reports and the table")
    ap.add_argument("--flavours", default="custom,portable,fp16")
    ap.add_argument("--iters", type=int, default=0, help="latency iterations per backend (0: accuracy only)")
    args = ap.parse_args()
    out = Path(args.out)
    if bad := [pair for pair in args.pairs if "=" not in pair]:
        ap.error(f"expected CONFIG=CHECKPOINT, got {bad}")
    pairs = [pair.split("=", 1) for pair in args.pairs]
    names = [row_name(cfg_path) for cfg_path, _ in pairs]
    if len(set(names)) < len(names):
        ap.error(f"two configs would share a row and a folder: {names}")
    rows, ok = [], True
    for (cfg_path, ckpt), name in zip(pairs, names):
        cfg = load_config(cfg_path)
        for flavour in args.flavours.split(","):
            t0 = time.perf_counter()
            onnx_path, meta = export_onnx(cfg, ckpt, out / name / f"{name}_{flavour}.onnx", dynamic_batch=True,
                                          **FLAVOURS[flavour])
            t1 = time.perf_counter()
            report = evaluate_engine(cfg, ckpt, onnx_path, backend="onnxruntime", iters=args.iters, num_show=2,
                                     out=onnx_path.with_suffix(".eval.json"))
            t2 = time.perf_counter()
            checks = {c["metric"]: c for c in report["parity"]}
            row = {"config": name, "flavour": flavour, "precision": meta.precision, "passed": report["passed"],
                   "export_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1), "checks": checks}
            rows.append(row)
            ok &= report["passed"]
            print(f"{name} {flavour}: " + ", ".join(f"{m} torch {c['torch']:.4f} ort {c['engine']:.4f} "
                                                 f"|d| {c['delta']:.4f}" for m, c in checks.items())
                  + f" -> {'PASS' if report['passed'] else 'FAIL'}", flush=True)
    lines = ["| config | flavour | metric | PyTorch | ONNX Runtime | abs diff | tolerance | verdict |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m, c in r["checks"].items():
            lines.append(f"| {r['config']} | {r['flavour']} | {m} | {c['torch']:.4f} | {c['engine']:.4f} | "
                         f"{c['delta']:.4f} | {c['tol']:g} | {'pass' if c['passed'] else 'FAIL'} |")
    table = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    (out / "parity_table.md").write_text(table + "\n")
    (out / "parity_table.json").write_text(json.dumps(rows, indent=2))
    print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
