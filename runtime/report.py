"""The ``dettool eval-engine`` report as JSON and as a Markdown table (also printed).

The Markdown opens with the verdict and what it rests on (images; torch, engine and matched
detections), then one line per check: "same detections" (pass / fail, with the measured values
against their limits) and "same AP" (pass / fail / inconclusive, with dAP and its 95% interval).
"""
from __future__ import annotations

import json
from pathlib import Path

from dettool.evaluation.coco_eval import BBOX_METRICS, SEGM_METRICS
from dettool.io import atomic_write_bytes

_METRIC_ORDER = ([f"bbox_{k}" for k in BBOX_METRICS] + [f"segm_{k}" for k in SEGM_METRICS]
                 + ["AR@100", "AR@300", "AR@1000"])


def _num(value, fmt: str = ".4f") -> str:
    return "-" if value is None else format(value, fmt)


def _status(check: dict) -> str:
    status = check.get("status") or ("pass" if check["passed"] else "fail")
    return "**FAIL**" if status == "fail" else status


def _interval(check: dict | None) -> str:
    if check is None or check.get("low") is None:
        return ""
    return f"[{check['low']:+.4f}, {check['high']:+.4f}]"


def metrics_table(report: dict) -> list[str]:
    """Rows ``metric | torch | engine | |diff| | 95% interval of engine - torch | tolerance | check``
    (checked metrics carry a tolerance, bootstrapped ones an interval)."""
    torch_m, engine_m = report["metrics"]["torch"], report["metrics"]["engine"]
    checks = {c["metric"]: c for c in report["parity"]}
    lines = [f"| metric | torch | {report['backend']} | abs diff | 95% interval of diff | tolerance | check |",
             "|---|---|---|---|---|---|---|"]
    for key in [k for k in _METRIC_ORDER if k in torch_m or k in engine_m]:
        a, b = torch_m.get(key), engine_m.get(key)
        diff = abs(b - a) if a is not None and b is not None else None
        check = checks.get(key)
        lines.append(f"| {key.replace('_', ' ')} | {_num(a)} | {_num(b)} | {_num(diff)} | {_interval(check)} | "
                     f"{'' if check is None else format(check['tol'], 'g')} | "
                     f"{'' if check is None else _status(check)} |")
    return lines


def verdict_lines(report: dict) -> list[str]:
    """What the verdict rests on, then one line per check (reports written before the two
    checks existed have neither: nothing)."""
    if "basis" not in report:
        return []
    basis, det = report["basis"], report["detections_check"]
    measured = ", ".join(f"{c['name']} {_num(c['value'], '.3g')} {'>=' if c['at_least'] else '<='} {c['limit']:g}"
                         + ("" if c["passed"] else " **no**") for c in det["criteria"])
    aps = "; ".join(f"{c['metric']} {c['engine'] - c['torch']:+.4f} "
                    + (f"(95% {_interval(c)}, {c['num_images']} images, {c['num_resamples']} resamples)"
                       if c.get("low") is not None else "(no interval)")
                    + f", tol {c['tol']:g}: {_status(c)}" for c in report["parity"])
    return [f"Rests on {basis['num_images']} images: {basis['torch_detections']} torch and "
            f"{basis['engine_detections']} {report['backend']} detections, {basis['matched']} matched.", "",
            f"- same detections: {'pass' if det['passed'] else '**FAIL**'} ({measured})",
            f"- same AP: {aps}", ""]


def outputs_table(outputs: dict) -> list[str]:
    """Matched-detection differences (one row)."""
    head = ["matched", "unmatched engine / torch", "box L-inf max / mean (px)", "score diff max / mean"]
    row = [str(outputs["matched"]), f"{outputs['unmatched_engine']} / {outputs['unmatched_torch']}",
           f"{_num(outputs['box_linf_px_max'])} / {_num(outputs['box_linf_px_mean'])}",
           f"{_num(outputs['score_diff_max'], '.2e')} / {_num(outputs['score_diff_mean'], '.2e')}"]
    if "mask_diff_max" in outputs:
        head.append("mask 1-IoU max / mean")
        row.append(f"{_num(outputs['mask_diff_max'])} / {_num(outputs['mask_diff_mean'])}")
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head), "| " + " | ".join(row) + " |"]


def latency_table(latency: dict) -> list[str]:
    """One row per backend and batch size."""
    lines = ["| backend | batch | p50 ms | p90 ms | images/s |", "|---|---|---|---|---|"]
    for name, per_batch in latency.items():
        for stats in per_batch.values():
            lines.append(f"| {name} | {stats['batch_size']} | {stats['p50_ms']:.1f} | {stats['p90_ms']:.1f} | "
                         f"{stats['images_per_s']:.2f} |")
    return lines


def format_report(report: dict) -> str:
    """The whole report as Markdown: header, metrics and parity, output differences, latency."""
    verdict = report.get("verdict") or ("PASSED" if report["passed"] else "FAILED: " + "; ".join(report["failures"]))
    lines = [f"## {Path(report['engine']).name}: {report['backend']}, {report['precision']}, {report['flavour']} "
             f"({report['model_type']})", "",
             f"{report['num_images']} val images of {report['config']}, batch {report['batch_size']}, device "
             f"{report['device']}; engine file {report['engine_size_mb']:.2f} MB. Parity {verdict}.", "",
             *verdict_lines(report), *metrics_table(report), "", f"Detections matched to torch (same label, IoU >= "
             f"{report['outputs']['iou_thr']}):", "", *outputs_table(report["outputs"])]
    if report["latency"]:
        lines += ["", "Latency of infer (after warm-up):", "", *latency_table(report["latency"])]
    return "\n".join(lines)


def write_report(report: dict, out: str | Path) -> tuple[Path, Path]:
    """Write ``out`` (JSON) and the Markdown table beside it (``.md``), each atomically."""
    out = Path(out)
    md = out.with_suffix(".md")
    atomic_write_bytes((json.dumps(report, indent=2) + "\n").encode(), out)
    atomic_write_bytes((format_report(report) + "\n").encode(), md)
    return out, md
