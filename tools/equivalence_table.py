"""The equivalence table of ``dettool convert``: per MMDetection config family and per torchvision
model, the largest raw-output difference from the original code's own model on the same random
weights and input, and the detections compared. Runs the cases of
tests/interop/test_mmdet_equivalence.py (MMDetection 3.3 with the test suite's compiled-ops
stand-in) and tests/interop/test_torchvision_equivalence.py; writes OUT.json and OUT.md and prints
the table.

    python tools/equivalence_table.py --out work_dirs/equivalence/table [mmdet:retinanet torchvision:fcos ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests"), str(REPO / "tests" / "interop")]

import test_mmdet_equivalence as mm  # noqa: E402  (the test modules hold the cases)
import test_torchvision_equivalence as tv  # noqa: E402


def mmdet_row(family: str, tmp: Path) -> dict:
    result = mm.run_family(family, tmp)
    try:
        mm.assert_same_outputs(family, result)
        identical, why = True, ""
    except AssertionError as exc:
        identical, why = False, str(exc).splitlines()[0]
    return {"source": "mmdet", "case": family, "reference": mm.FAMILIES[family][0],
            "raw_outputs": len(result["pairs"]),
            "max_abs_diff_raw": max(float((d - r).abs().max()) for _, r, d in result["pairs"]),
            "detections": sum(len(r) for r in result["ref_dets"]),
            "detections_dettool": sum(len(d) for d in result["dets"]), "identical": identical, "why_not": why}


def torchvision_row(name: str, tmp: Path) -> dict:
    result = tv.run_model(name, tmp)
    stats: dict = {}
    try:
        stats = tv.assert_same_outputs(name, result)
        identical, why = True, ""
    except AssertionError as exc:
        identical, why = False, str(exc).splitlines()[0]
    return {"source": "torchvision", "case": name, "reference": f"torchvision.models.detection.{name}",
            "raw_outputs": len(result["pairs"]),
            "max_abs_diff_raw": max(float((d.double() - r.double()).abs().max()) for _, r, d in result["pairs"]),
            "detections": sum(len(r["boxes"]) for r in result["ref_dets"]),
            "detections_dettool": sum(len(d) for d in result["dets"]),
            "mask_pixels_differing": stats.get("mask_pixels_differing"), "identical": identical, "why_not": why}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.md")
    ap.add_argument("cases", nargs="*", help="mmdet:FAMILY or torchvision:NAME (default: all)",
                    default=[f"mmdet:{f}" for f in sorted(mm.FAMILIES)]
                    + [f"torchvision:{n}" for n in sorted(tv.MODELS)])
    args = ap.parse_args()
    rows = []
    for i, case in enumerate(args.cases):
        source, _, name = case.partition(":")
        if source not in ("mmdet", "torchvision"):
            ap.error(f"{case}: expected mmdet:FAMILY or torchvision:NAME")
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            row = (mmdet_row if source == "mmdet" else torchvision_row)(name, Path(tmp))
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(f"[{i + 1}/{len(args.cases)}] {case}: max |diff| {row['max_abs_diff_raw']:.2e}, "
              f"{row['detections']} detections, {'identical' if row['identical'] else 'DIFFERENT: ' + row['why_not']}"
              f" ({row['seconds']} s)", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = ["| source | case | reference | raw outputs compared | max abs diff (float64) "
             "| detections (reference / dettool) | same detections |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['source']} | {r['case']} | `{r['reference']}` | {r['raw_outputs']} | "
              f"{r['max_abs_diff_raw']:.1e} | {r['detections']} / {r['detections_dettool']} | "
              + ("yes" if r["identical"] else "NO: " + r["why_not"])
              + (f" (mask pixels differing: {r['mask_pixels_differing']:.1e})"
                 if r.get("mask_pixels_differing") is not None and "mask" in r["case"] else "") + " |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
