#!/usr/bin/env python3
"""``dettool infer`` end to end on held-out images: a deploy graph and its checkpoint agree, and
the results JSON evaluates to ``dettool eval``'s AP.

1. Writes a held-out COCO-format val set with dettool's generator under another seed and other
   image and object sizes (the model's category ids kept), then makes it awkward: one image
   grayscale, one RGBA (a PNG with transparency), every 40th name with a space and a non-ASCII
   letter (the generator's), plus one corrupt file that is not in the annotations.
2. Runs ``dettool infer`` (as a separate process) with the ONNX graph and with the checkpoint on
   that folder, with ``--ann-file``.
3. Runs ``dettool eval`` of the checkpoint on the same set, and evaluates each ``results.json``
   with pycocotools directly (``COCO.loadRes`` + ``COCOeval``).
4. Matches the two runs' detections one to one (``runtime.parity.OutputDiff``), counts warning
   lines, compares the APs; writes ``check.json`` and ``check.md`` in ``--out`` and exits 1 when
   a check fails.

    python tools/infer_check.py work_dirs/quickstart/deploy/model.onnx work_dirs/quickstart/epoch_3.pth \\
        configs/retinanet_r18_fpn_synth.yaml --out work_dirs/infer_check
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from torchvision.ops import box_convert

from dettool.config import load_config
from dettool.data.synth import SynthOptions, generate
from dettool.runtime.parity import OutputDiff
from dettool.structures.detections import Detections

HELD_OUT = SynthOptions(image_width=(160, 480), image_height=(120, 400), object_size=(12, 160))
EVAL_BATCH = 1
BOX_TOL_PX, SCORE_TOL = 1e-2, 5e-4  # the parity tolerances of tools/equivalence_table.py


def make_held_out(root: Path, num: int, seed: int, category_ids: list[int]) -> tuple[Path, Path]:
    """The awkward held-out val folder and its annotation file."""
    if root.exists():
        shutil.rmtree(root)
    generate(root, 0, num, seed, options=SynthOptions(**{**HELD_OUT.__dict__, "category_ids": tuple(category_ids)}))
    img_dir, ann_file = root / "val", root / "annotations" / "val.json"
    data = json.loads(ann_file.read_text(encoding="utf-8"))
    gray, rgba = data["images"][0], data["images"][1]
    path = img_dir / gray["file_name"]
    Image.open(path).convert("L").save(path, quality=92)
    path = img_dir / rgba["file_name"]
    pixels = np.asarray(Image.open(path).convert("RGB"))
    alpha = np.full(pixels.shape[:2] + (1,), 255, np.uint8)  # opaque: the pixels the annotations describe
    alpha[:4, :4] = 0  # ... but a real alpha channel, composited on black in the corner
    Image.fromarray(np.concatenate([pixels, alpha], axis=2), "RGBA").save(path.with_suffix(".png"))
    path.unlink()
    rgba["file_name"] = path.with_suffix(".png").name
    ann_file.write_text(json.dumps(data), encoding="utf-8")
    (img_dir / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    return img_dir, ann_file


def dettool(*args) -> tuple[int, str, str]:
    proc = subprocess.run([sys.executable, "-m", "dettool", *[str(a) for a in args]], capture_output=True, text=True)
    return proc.returncode, proc.stdout, proc.stderr


def cocoeval_ap(ann_file: Path, results_file: Path, iou_type: str) -> float:
    """pycocotools alone on a results file (images of the annotation file only)."""
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(ann_file))
        rows = [r for r in json.loads(results_file.read_text(encoding="utf-8")) if r["image_id"] in gt.imgs]
        ev = COCOeval(gt, gt.loadRes(rows), iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return float(ev.stats[0])


def by_image(results: list[dict]) -> dict[int, Detections]:
    out: dict[int, list[dict]] = {}
    for r in results:
        out.setdefault(r["image_id"], []).append(r)

    def dets(rows: list[dict]) -> Detections:
        boxes = box_convert(torch.tensor([r["bbox"] for r in rows], dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy")
        return Detections(boxes, torch.tensor([r["score"] for r in rows], dtype=torch.float64),
                          torch.tensor([r["category_id"] for r in rows]))

    return {k: dets(v) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("onnx")
    ap.add_argument("checkpoint")
    ap.add_argument("config")
    ap.add_argument("--out", default="work_dirs/infer_check")
    ap.add_argument("--num", type=int, default=60, help="held-out images")
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    out = Path(args.out)
    meta = json.loads(Path(args.onnx).with_suffix(".json").read_text(encoding="utf-8"))
    img_dir, ann_file = make_held_out(out / "held_out", args.num, args.seed, meta["cat_ids"])
    print(f"held-out set: {args.num} images + 1 corrupt file in {img_dir}", flush=True)

    runs = {}
    for name, model, extra in (("onnx", args.onnx, []), ("checkpoint", args.checkpoint, ["--config", args.config])):
        # batch 1 in both: padding to a batch's largest image moves border features a little, so
        # the same AP needs the same batches (and a folder's order is not the annotation file's)
        code, stdout, stderr = dettool("infer", model, img_dir, "--out", out / name, "--ann-file", ann_file,
                                       "--batch-size", str(EVAL_BATCH), *extra)
        warnings = [ln for ln in stderr.splitlines() if ln.startswith("dettool: warning:")]
        summary = json.loads((out / name / "summary.json").read_text(encoding="utf-8")) if code == 0 else {}
        results_file = out / name / "results.json"
        runs[name] = {"exit": code, "warnings": warnings, "summary": summary, "results_file": results_file,
                      "stderr_tail": stderr.splitlines()[-3:]}
        print(f"dettool infer ({name}): exit {code}, {len(warnings)} warning line(s)", flush=True)
    sets = [f"data.val.ann_file={ann_file}", f"data.val.img_dir={img_dir}", "data.synth=null"]
    load_config(args.config, sets)  # fail here, in one line, if the overrides do not fit
    code, _, stderr = dettool("eval", args.config, args.checkpoint, "--out", out / "eval.json", "--batch-size",
                              EVAL_BATCH,
                              *[a for s in sets for a in ("--set", s)])
    if code != 0:
        raise SystemExit(f"dettool eval failed: {stderr.strip().splitlines()[-1]}")
    eval_metrics = json.loads((out / "eval.json").read_text(encoding="utf-8"))

    diff = OutputDiff()
    a = by_image(json.loads(runs["checkpoint"]["results_file"].read_text(encoding="utf-8")))
    b = by_image(json.loads(runs["onnx"]["results_file"].read_text(encoding="utf-8")))
    empty = Detections(torch.zeros((0, 4)), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    for image_id in sorted(set(a) | set(b)):
        diff.add(a.get(image_id, empty), b.get(image_id, empty))
    same = diff.summary()
    with_masks = meta["with_masks"]
    rows = []
    for name, run in runs.items():
        ap_infer = run["summary"].get("metrics", {}).get("bbox_AP")
        row = {"run": name, "exit": run["exit"], "warnings": len(run["warnings"]),
               "images": run["summary"].get("num_images"), "detections": run["summary"].get("num_detections"),
               "infer_bbox_AP": ap_infer, "pycocotools_bbox_AP": cocoeval_ap(ann_file, run["results_file"], "bbox"),
               "eval_bbox_AP": eval_metrics["bbox_AP"]}
        if with_masks:
            row["pycocotools_segm_AP"] = cocoeval_ap(ann_file, run["results_file"], "segm")
            row["eval_segm_AP"] = eval_metrics.get("segm_AP")
        rows.append(row)
    checks = {
        "one warning per run, naming the corrupt file": all(
            len(r["warnings"]) == 1 and "broken.jpg" in r["warnings"][0] for r in runs.values()),
        "every readable image in each run": all(r["images"] == args.num for r in rows),
        "same detections (all matched, box <= 1e-2 px, score <= 5e-4)": (
            same["matched_fraction"] == 1.0 and same["unmatched_engine"] == 0 and same["unmatched_torch"] == 0
            and (same["box_linf_px_max"] or 0.0) <= BOX_TOL_PX and (same["score_diff_max"] or 0.0) <= SCORE_TOL),
        "results.json evaluates to dettool eval's AP": all(
            abs(r["pycocotools_bbox_AP"] - r["eval_bbox_AP"]) <= 1e-4 and abs(r["infer_bbox_AP"] - r["eval_bbox_AP"])
            <= 1e-4 for r in rows),
    }
    report = {"onnx": args.onnx, "checkpoint": args.checkpoint, "config": args.config, "held_out": str(img_dir),
              "num_images": args.num, "runs": rows, "matched": same, "checks": checks,
              "warnings": {k: v["warnings"] for k, v in runs.items()}, "passed": all(checks.values())}
    lines = ["| run | exit | warnings | images | detections | infer bbox AP | pycocotools bbox AP | eval bbox AP |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['run']} | {r['exit']} | {r['warnings']} | {r['images']} | {r['detections']} | "
                     f"{r['infer_bbox_AP']:.4f} | {r['pycocotools_bbox_AP']:.4f} | {r['eval_bbox_AP']:.4f} |")
    lines += ["", f"matched {same['matched']} (unmatched: onnx {same['unmatched_engine']}, checkpoint "
              f"{same['unmatched_torch']}), box max {same['box_linf_px_max']}, score max {same['score_diff_max']}", ""]
    lines += [f"- {'pass' if ok else 'FAIL'}: {name}" for name, ok in checks.items()]
    table = "\n".join(lines)
    (out / "check.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    (out / "check.md").write_text(table + "\n", encoding="utf-8")
    print(table)
    sys.exit(0 if report["passed"] else 1)


if __name__ == "__main__":
    main()
