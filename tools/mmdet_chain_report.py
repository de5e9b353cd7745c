"""The report of tools/mmdet_chain.py: its result dict as Markdown (chain.md), and the converter
findings drawn from the runs' own evidence."""
from __future__ import annotations


def fmt(x) -> str:
    """A difference for the tables: 4 decimals, or 3 significant digits when small; '-' for none."""
    if x is None:
        return "-"
    return f"{x:.4f}" if x == 0 or abs(x) >= 1e-3 else f"{x:.2e}"


TIES_HEADER = ("| comparison | reference scores exactly 1.0 (images) | unmatched reference (with a bit-equal twin) "
               "| unmatched other (with twin) | images with unmatched (all kept scores >= 1 - 1e-5) "
               "| matched pairs > 1e-2 px (of tied score) |\n|---|---|---|---|---|---|")


def ties_row(label: str, t: dict) -> str:
    return (f"| {label} | {t['saturated']} ({t['images_with_saturated']}) | {t['unmatched_ref']} "
            f"({t['unmatched_ref_with_twin']}) | {t['unmatched_got']} ({t['unmatched_got_with_twin']}) | "
            f"{t['images_with_unmatched']} ({t['images_with_unmatched_saturated_list']}) | "
            f"{t['pairs_over_1e-2px']} ({t['pairs_over_1e-2px_tied']}) |")


def markdown(result: dict, trained_config: str) -> str:
    """chain.md: AP, detection agreement, eval-engine parity, settings checks, findings (``trained_config``:
    the dettool config the trained case's MMDetection config was written from)."""
    cases = result["cases"]
    lines = ["## bbox AP: MMDetection's inference_detector vs dettool eval (converted model)", "",
             "| case | model | images | size | MMDetection AP | dettool eval AP | equal (4 d.p.) "
             "| AP50 (MMDet / dettool) | AP75 (MMDet / dettool) |", "|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        m, d = c["mmdet"], c["dettool_eval"]
        lines.append(f"| {c['case']} | {c['model']} | {c['images']} | {c['size']} | {m['bbox_AP']:.4f} | "
                     f"{d['bbox_AP']:.4f} | {'yes' if c['ap_equal_4dp'] else 'NO'} | {m['bbox_AP50']:.4f} / "
                     f"{d['bbox_AP50']:.4f} | {m['bbox_AP75']:.4f} / {d['bbox_AP75']:.4f} |")
    lines += ["", "## Detections per image: MMDetection vs dettool eval (same label, IoU >= 0.5, one to one)", "",
              "| case | detections (MMDet / dettool) | matched | unmatched (MMDet / dettool) "
              "| within 1e-2 px and 5e-4 | max box diff (px) | max score diff |", "|---|---|---|---|---|---|---|"]
    for c in cases:
        a = c["agreement"]
        lines.append(f"| {c['case']} | {a['detections_mmdet']} / {a['detections_dettool']} | {a['matched']} | "
                     f"{a['unmatched_mmdet']} / {a['unmatched_dettool']} | {a['within_test_tol']} | "
                     f"{fmt(a['box_linf_px_max'])} | {fmt(a['score_diff_max'])} |")
    lines += ["", "Where they differ, exact score ties (see `tie_evidence`):", "", TIES_HEADER]
    lines += [ties_row(f"{c['case']}: MMDetection vs dettool eval", c["agreement"]["ties"]) for c in cases]
    lines += ["", "## dettool eval-engine on each export (onnxruntime, CPU)", "",
              "| case | flavour | metric | torch | engine | delta | tol | passed | detections matched "
              "| unmatched (torch / engine) | max box diff (px) | max score diff |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for c in cases:
        for flavour, r in c["eval_engine"].items():
            if "error" in r:
                lines.append(f"| {c['case']} | {flavour} | {r['error']} |" + " |" * 9)
                continue
            o = r["outputs"]
            for p in r["parity"]:
                lines.append(f"| {c['case']} | {flavour} | {p['metric']} | {p['torch']:.4f} | {p['engine']:.4f} | "
                             f"{p['delta']:.4f} | {p['tol']:g} | {'yes' if p['passed'] else 'NO'} | {o['matched']} | "
                             f"{o['unmatched_torch']} / {o['unmatched_engine']} | {fmt(o['box_linf_px_max'])} | "
                             f"{fmt(o['score_diff_max'])} |")
    for c in cases:
        if c.get("proposal_diagnosis"):
            lines += ["", f"## {c['case']}: images whose detections differ, diagnosed", "",
                      "| image | proposals only MMDet / only dettool | first differing proposal rank | scores there "
                      "(MMDet, dettool) | exact tie | dettool RoI head on MMDet's proposals: matched, max box diff, "
                      "max score diff |", "|---|---|---|---|---|---|"]
            for d in c["proposal_diagnosis"]:
                r = d["dettool_roi_head_on_mmdet_proposals"]
                scores = ", ".join(f"{x:.9g}" for x in d["scores_there"] or [])
                lines.append(f"| {d['image_id']} | {d['proposals_only_mmdet']} / {d['proposals_only_dettool']} | "
                             f"{d['first_difference_rank']} | {scores} | {'yes' if d['tie'] else 'no'} | "
                             f"{r['matched']} (unmatched {r['unmatched'][0]} / {r['unmatched'][1]}), "
                             f"{fmt(r['box_linf_px_max'])}, {fmt(r['score_diff_max'])} |")
        if "settings" in c:
            s = c["settings"]
            lines += ["", f"## {c['case']}: the MMDetection config, converted", "",
                      f"- converted yaml vs `{trained_config}`: model section equal, test "
                      f"section equal, data {', '.join(s['data_equal'])} equal; test_scale "
                      f"{s['test_scale']['converted']} (the canvas, scale factor 1) where the dettool config has "
                      f"{s['test_scale']['dettool_config']}",
                      f"- {c['tensors']} tensors mapped one to one ({c['renamed_tensors']} renamed); converting the "
                      f"written MMDetection checkpoint back gives the trained weights bit for bit: "
                      f"{'yes' if c['round_trip_bit_exact'] else 'NO'}"]
        if "investigation" in c:
            v = c["investigation"]
            lines += ["", f"## {c['case']}: engine vs PyTorch detections, investigated (custom-op engine)", "",
                      f"{v['images_at_cap']}/{v['images']} images have max_per_img = {v['max_per_img']} detections.",
                      "", "| comparison | matched | unmatched (torch / other) | max box diff (px) | mean box diff (px) "
                      "| max score diff |", "|---|---|---|---|---|---|"]
            for key, label in (("engine", "PyTorch vs onnxruntime engine"),
                               ("noise_control", f"PyTorch vs PyTorch, input + N(0, {v['noise_std']:g})")):
                o = v[key]
                lines.append(f"| {label} | {o['matched']} | {o['unmatched_torch']} / {o['unmatched_engine']} | "
                             f"{fmt(o['box_linf_px_max'])} | {fmt(o['box_linf_px_mean'])} | "
                             f"{fmt(o['score_diff_max'])} |")
            lines += ["", TIES_HEADER]
            lines += [ties_row(label, v[key]["ties"]) for key, label in
                      (("engine", "PyTorch vs engine"), ("noise_control", "PyTorch vs PyTorch + noise"))]
            lines += ["", "| detections | count | min score rank | median rank | in the last half of the list |",
                      "|---|---|---|---|---|"]
            lines += [f"| {k} | {r['count']} | {r['min']} | {r['median']} | {r['in_last_half']} |"
                      for k, r in v["ranks"].items()]
    if result["findings"]:
        lines += ["", "## Converter / exporter findings", ""] + [f"- {f}" for f in result["findings"]]
    lines += ["", f"dettool {result['git']}; {result['seconds']:.0f} s on {result['cpus']} CPU threads."]
    return "\n".join(lines) + "\n"


def findings(cases: list[dict]) -> list[str]:
    """What the converter refused or carried wrongly, from the runs' own evidence."""
    out = []
    for c in cases:
        if c.get("giou_reg_decoded_bbox_refused"):
            out.append("GIoU box loss: MMDetection says `reg_decoded_bbox=True` for it (False is GIoU of delta "
                       f"vectors); the converter refuses that ({c['giou_reg_decoded_bbox_refused']}), so the config "
                       "here says False, which it translates as dettool's decoded-box giou (training only)")
        for flavour, r in c["eval_engine"].items():
            if "engine_class_names" in r and (r["engine_class_names"] != c["classes"]
                                              or r["engine_cat_ids"] != c["cat_ids"]):
                out.append(f"{c['case']} ({flavour} and the other flavours): the engine's metadata gives class names "
                           f"{r['engine_class_names']} and cat_ids {r['engine_cat_ids']}, the dataset "
                           f"{c['classes']} and {c['cat_ids']} (an MMDetection checkpoint holds no category ids; "
                           "eval-engine maps labels by the dataset, so its parity rows are unaffected, but a consumer "
                           "of the metadata alone would write other category ids)")
                break
    return out
