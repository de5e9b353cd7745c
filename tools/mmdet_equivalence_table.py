"""The equivalence table of ``dettool convert mmdet``: per MMDetection config family, the largest
raw-output difference from MMDetection's own model on the same random weights and input, and the
detections compared. Runs the cases of tests/interop/test_mmdet_equivalence.py (MMDetection 3.3
with the test suite's compiled-ops stand-in); writes OUT.json and OUT.md and prints the table.

    python tools/mmdet_equivalence_table.py --out work_dirs/mmdet_equivalence
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

import test_mmdet_equivalence as eq  # noqa: E402  (the test module holds the cases)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="output stem: writes OUT.json and OUT.md")
    ap.add_argument("families", nargs="*", default=sorted(eq.FAMILIES), help="default: every family")
    args = ap.parse_args()
    rows = []
    for i, family in enumerate(args.families):
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            result = eq.run_family(family, Path(tmp))
        try:
            eq.assert_same_outputs(family, result)
            identical, why = True, ""
        except AssertionError as exc:
            identical, why = False, str(exc).splitlines()[0]
        raw = max(float((d - r).abs().max()) for _, r, d in result["pairs"])
        rows.append({"family": family, "config": eq.FAMILIES[family][0], "raw_outputs": len(result["pairs"]),
                     "max_abs_diff_raw": raw, "detections": sum(len(r) for r in result["ref_dets"]),
                     "detections_dettool": sum(len(d) for d in result["dets"]), "identical": identical,
                     "why_not": why, "seconds": round(time.perf_counter() - t0, 1)})
        print(f"[{i + 1}/{len(args.families)}] {family}: max |diff| {raw:.2e}, "
              f"{rows[-1]['detections']} detections, {'identical' if identical else 'DIFFERENT: ' + why}", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    lines = ["| family | MMDetection config | raw outputs compared | max abs diff (float64) "
             "| detections (MMDetection / dettool) | same detections |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['family']} | `{r['config']}` | {r['raw_outputs']} | {r['max_abs_diff_raw']:.1e} | "
              f"{r['detections']} / {r['detections_dettool']} | {'yes' if r['identical'] else 'NO: ' + r['why_not']} |"
              for r in rows]
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
