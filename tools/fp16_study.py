"""Where an exported two-stage detector's ONNX graph (FP16 and FP32) departs from eager PyTorch.

    python tools/fp16_study.py CFG CKPT [--set k=v ...] [--max-images N] [--out study.json]

The deploy graph is traced here (with the exporter's per-node module scopes, which the written
file drops), converted with ``exporters.fp16.convert_to_fp16`` and given extra graph outputs at
module boundaries: the FPN levels, the RPN's objectness and deltas, the proposals (after top-k and
NMS), the RoIs, the box head's class logits and deltas, the decoded boxes and scores, the mask
logits. Each image runs through eager PyTorch and through both graphs, stage by stage:

- ``fpn`` / ``rpn_cls`` / ``rpn_reg``: max and mean |graph - eager| over each level, and the max
  relative to the level's largest |eager| value;
- ``proposals``: the graph's proposal set against eager's, each proposal ``same`` (L-inf <= 0.01
  px), ``moved`` (within 0.5 px: the same anchor, its deltas rounded) or ``differs``; a
  differing proposal is a ``near tie`` when its objectness lies within the RPN's largest score
  error of the last proposal kept (the top-k / max_per_img boundary) or when its IoU with an
  overlapping proposal of the other set lies within 0.02 of the NMS threshold;
- ``box_head`` / ``box_decode`` / ``mask_logits``: the eager heads run on the graph's own RoIs
  (and the graph's detections, for masks), so these errors are the heads' alone;
- ``detections``: matched as eval-engine matches them; every differing detection (unmatched, or
  its box more than 0.5 px or its score more than 0.02 away) is traced to the RoI it was decoded
  from, and counted as coming from a RoI the other side also has or from one only this side has.

Two-stage detectors with a standard RoI head (Faster / Mask R-CNN, Double-Head without the
enlarged regression RoIs) only. For every detector, ``--engine FILE`` compares an exported graph's
final detections with eager's instead (``detection_ties``): which differing detections sit at a
selection boundary (the score threshold, or the ``max_per_img`` cut of an image whose detections
fill all rows) within the engine's own score noise, which are zero-area boxes (clipped to the
image border) whose twin on the other side the matcher cannot pair (IoU 0/0), and which matched
pairs more than 0.5 px apart are a duplicate's pairing (the engine's box exists among eager's).
"""
from __future__ import annotations

import argparse
import ast
import collections
import copy
import json
import math
import sys
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import TensorProto
from torchvision.ops import box_iou

from dettool.config import load_config
from dettool.exporters.deploy.detector import build_deploy_model
from dettool.exporters.fp16 import convert_to_fp16
from dettool.exporters.torch2onnx import example_inputs, trace_to_onnx
from dettool.runtime.ort_custom_ops import make_session
from dettool.runtime.parity import match_detections
from dettool.structures.detections import Detections, image_shapes_tensor
from dettool.trainer import builder
from dettool.trainer.evaluate import load_trained_model
from dettool.trainer.models.postprocess.batched import rois_from_batched
from dettool.trainer.models.postprocess.nms import multiclass_nms

SCOPES = "pkg.torch.onnx.name_scopes"
# module path -> stage name; the boundary values of each module become graph outputs
MODULES = {"model.neck": "fpn", "model.rpn_head": "rpn", "model.rpn_head.proposal_decoder": "proposals",
           "model.roi_head.rois": "rois", "model.roi_head.bbox_head": "box_head",
           "model.roi_head.box_decode": "box_decode", "model.roi_head.mask_branch.mask_head": "mask_logits"}
SAME_PX, MOVED_PX, NMS_BAND = 0.01, 0.5, 0.02
DET_BOX_PX, DET_SCORE = 0.5, 0.02


def _scopes(node: onnx.NodeProto) -> list[str]:
    for prop in node.metadata_props:
        if prop.key == SCOPES:
            return ast.literal_eval(prop.value)
    return []


def boundary_values(model: onnx.ModelProto) -> dict[str, list[str]]:
    """``{stage: [value names]}``: the values each module of ``MODULES`` hands to the rest of the graph,
    in graph order (shape arithmetic included; the caller keeps the float tensors)."""
    consumers = collections.defaultdict(list)
    for node in model.graph.node:
        for name in node.input:
            consumers[name].append(node)
    outputs = {o.name for o in model.graph.output}
    found: dict[str, list[str]] = {}
    for module, stage in MODULES.items():
        names = []
        for node in model.graph.node:
            if module not in _scopes(node):
                continue
            names += [o for o in node.output if o in outputs or any(module not in _scopes(c) for c in consumers[o])]
        found[stage] = names
    # the proposal NMS's own outputs (num_dets, boxes, scores, levels): the scores are not read downstream
    nms = [n for n in model.graph.node if n.op_type == "DettoolBatchedNMS"
           and "model.rpn_head.proposal_decoder" in _scopes(n)]
    if nms:
        found["proposals"] = list(nms[0].output)
    return found


def renamed(model: onnx.ModelProto, names: list[str]) -> dict[str, str]:
    """``{traced name: name in model}``: the FP16 converter renames the float32 output ``x`` of a
    blocked node feeding FP16 nodes to ``x_cast_to_fp16``... (its cast, now removed, wrote ``x``)."""
    produced = [o for n in model.graph.node for o in n.output]
    exists = set(produced)
    out = {}
    for name in names:
        if name in exists:
            out[name] = name
        else:
            alt = [p for p in produced if p.startswith(name + "_")]
            if alt:
                out[name] = alt[0]
    return out


def with_outputs(model: onnx.ModelProto, names: list[str]) -> onnx.ModelProto:
    """A copy of ``model`` whose graph also outputs ``names`` (element types from the graph's value_info)."""
    model = copy.deepcopy(model)
    types = {v.name: v.type.tensor_type.elem_type for v in model.graph.value_info}
    present = {o.name for o in model.graph.output}
    for name in names:
        if name not in present:
            elem = types.get(name, TensorProto.FLOAT)
            model.graph.output.append(onnx.helper.make_tensor_value_info(name, elem, None))
    return model


def err(ref: torch.Tensor, got: torch.Tensor) -> dict:
    """max / mean |got - ref| and the max relative to max |ref|."""
    d = (got.float() - ref.float()).abs()
    scale = float(ref.float().abs().max()) if ref.numel() else 0.0
    if not d.numel():
        return {"max": 0.0, "mean": 0.0, "rel": 0.0}
    return {"max": float(d.max()), "mean": float(d.mean()), "rel": float(d.max()) / scale if scale else 0.0}


def merge(errs: list[dict]) -> dict:
    if not errs:
        return {}
    return {"max": max(e["max"] for e in errs), "mean": float(np.mean([e["mean"] for e in errs])),
            "rel": max(e["rel"] for e in errs)}


class Study:
    """Eager model and the FP32 / FP16 graphs with their boundary outputs."""

    def __init__(self, cfg, checkpoint: str, traced: Path | None) -> None:
        self.cfg = cfg
        self.model = load_trained_model(cfg, checkpoint, torch.device("cpu")).eval()
        if traced is not None and traced.is_file():
            fp32 = onnx.load(str(traced))
        else:
            print("fp16_study: tracing the deploy graph (a minute or two)", flush=True)
            fp32 = trace_to_onnx(build_deploy_model(self.model), example_inputs(cfg, 1), False, False,
                                 cfg.data.size_divisor)
            if traced is not None:
                onnx.save(fp32, str(traced))
        self.values = boundary_values(fp32)
        fp16 = convert_to_fp16(copy.deepcopy(fp32))
        fp32 = onnx.shape_inference.infer_shapes(fp32)
        extra = [n for names in self.values.values() for n in names]
        self.names = {"fp32": renamed(fp32, extra), "fp16": renamed(fp16, extra)}
        self.sessions = {p: make_session(with_outputs(m, list(self.names[p].values())))
                         for p, m in (("fp32", fp32), ("fp16", fp16))}

    def run_graph(self, precision: str, images: torch.Tensor, shapes: torch.Tensor) -> dict[str, list[torch.Tensor]]:
        sess = self.sessions[precision]
        names = [o.name for o in sess.get_outputs()]
        values = dict(zip(names, sess.run(None, {"images": images.numpy(), "image_shapes": shapes.numpy()})))
        out = {k: torch.from_numpy(np.asarray(values[k]).astype(np.float32))
               for k in ("num_dets", "boxes", "scores", "labels")}
        if "masks" in values:
            out["masks"] = torch.from_numpy(values["masks"].astype(np.float32))
        names = self.names[precision]
        for stage, stage_names in self.values.items():
            arrays = [np.asarray(values[names[n]]) for n in stage_names if n in names]
            out[stage] = [torch.from_numpy(a.astype(np.float32)) for a in arrays
                          if a.dtype.kind == "f" or stage == "proposals"]
        return out

    @torch.no_grad()
    def eager(self, images: torch.Tensor, shapes: torch.Tensor) -> dict:
        """The deploy path (``decode`` over all K proposals) step by step."""
        m = self.model
        feats = m.extract_feats(images)
        rpn_raw = m.rpn_head(feats)
        props = m.rpn_head.proposals(rpn_raw, shapes, training=False)
        rh = m.roi_head
        rois = rh.rois(props.boxes)
        cls, reg = rh.bbox_forward(feats, rois)
        boxes, scores = rh.box_decode(rois, cls, reg, props.num_dets, shapes)
        dets = multiclass_nms(boxes, scores, rh.test_cfg)
        return {"feats": feats, "rpn": rpn_raw, "props": props, "rois": rois, "cls": cls, "reg": reg,
                "boxes": boxes, "scores": scores, "dets": dets}

    @torch.no_grad()
    def heads_on(self, feats: list[torch.Tensor], rois: torch.Tensor, num: torch.Tensor, shapes: torch.Tensor,
                 det_boxes: torch.Tensor, det_labels: torch.Tensor) -> dict:
        """Eager box head (and mask head) on the graph's RoIs (and detections)."""
        rh = self.model.roi_head
        cls, reg = rh.bbox_forward(feats, rois)
        boxes, scores = rh.box_decode(rois, cls, reg, num, shapes)
        out = {"cls": cls, "reg": reg, "boxes": boxes, "scores": scores}
        if rh.mask_branch is not None:
            br = rh.mask_branch
            out["mask_logits"] = br.mask_head(br.roi_extractor(feats, rois_from_batched(det_boxes)))
        return out


def _pair_by_shape(ref: list[torch.Tensor], got: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Pair each eager tensor with the graph tensor of its shape (in order)."""
    pool = list(got)
    pairs = []
    for r in ref:
        for i, g in enumerate(pool):
            if tuple(g.shape) == tuple(r.shape):
                pairs.append((r, pool.pop(i)))
                break
    return pairs


def compare_proposals(e_boxes, e_scores, e_levels, g_boxes, g_scores, g_levels, score_err: float,
                      iou_thr: float) -> dict:
    """Classify each side's proposals against the other's (see the module docstring)."""
    out = {"eager": len(e_boxes), "graph": len(g_boxes)}
    if not len(e_boxes) or not len(g_boxes):
        return out
    linf = (g_boxes[:, None] - e_boxes[None]).abs().amax(-1)  # [G, E]
    iou = box_iou(g_boxes, e_boxes)
    cut = min(float(e_scores.min()), float(g_scores.min()))  # the lowest kept objectness
    for side, own_scores, own_levels, d, ious, other_boxes, other_levels in (
            ("graph", g_scores, g_levels, linf, iou, e_boxes, e_levels),
            ("eager", e_scores, e_levels, linf.T, iou.T, g_boxes, g_levels)):
        same = d.amin(1) <= SAME_PX
        moved = ~same & (d.amin(1) <= MOVED_PX)
        differs = ~same & ~moved
        at_cut = own_scores <= cut + score_err
        same_level = own_levels[:, None] == other_levels[None]
        near_nms = (((ious - iou_thr).abs() <= NMS_BAND) & same_level).any(1)
        shift = d.amin(1)[moved]
        out[side] = {"n": len(own_scores), "same": int(same.sum()), "moved": int(moved.sum()),
                     "moved_max_px": float(shift.max()) if len(shift) else 0.0,
                     "differs": int(differs.sum()), "differs_near_tie": int((differs & (at_cut | near_nms)).sum()),
                     "differs_at_topk_cut": int((differs & at_cut).sum()),
                     "differs_near_nms_thr": int((differs & near_nms & ~at_cut).sum()),
                     "differs_rank_max": int(torch.nonzero(differs).max()) if differs.any() else None}
    return out


def source_rows(det_boxes: torch.Tensor, det_labels: torch.Tensor, boxes: torch.Tensor) -> list[int]:
    """The RoI row each detection was decoded from: ``boxes [K, C, 4]`` (or ``[K, 4]``) equal to its box."""
    rows = []
    for b, c in zip(det_boxes, det_labels.long()):
        cand = boxes[:, c] if boxes.dim() == 3 else boxes
        d = (cand - b).abs().amax(-1)
        rows.append(int(d.argmin()) if float(d.min()) <= 1e-4 else -1)
    return rows


def study_image(study: Study, images: torch.Tensor, shapes: torch.Tensor, precision: str) -> dict:
    e = study.eager(images, shapes)
    g = study.run_graph(precision, images, shapes)
    rec: dict = {}
    rec["fpn"] = [err(r, x) for r, x in _pair_by_shape(e["feats"], g["fpn"])]
    cls_e, reg_e = e["rpn"]
    pairs_cls = _pair_by_shape(cls_e, g["rpn"])
    pairs_reg = _pair_by_shape(reg_e, g["rpn"])
    rec["rpn_cls"] = [err(r, x) for r, x in pairs_cls]
    rec["rpn_score"] = [err(r.sigmoid(), x.sigmoid()) for r, x in pairs_cls]
    rec["rpn_reg"] = [err(r, x) for r, x in pairs_reg]
    score_err = max((s["max"] for s in rec["rpn_score"]), default=0.0)

    # proposals: the graph's RoIs are its proposals padded to K (rows past num_dets are zero boxes)
    props = e["props"]
    n_e = int(props.num_dets[0])
    g_rois = g["rois"][0]
    g_num, _, g_prop_scores, g_prop_levels = g["proposals"]  # the proposal NMS: num_dets, boxes, scores, levels
    n_g = int(g_num[0])
    iou_thr = study.cfg.model.rpn_head.test_proposals.nms_iou_thr
    rec["proposals"] = compare_proposals(props.boxes[0, :n_e], props.scores[0, :n_e], props.labels[0, :n_e].float(),
                                         g_rois[:n_g, 1:], g_prop_scores[0, :n_g], g_prop_levels[0, :n_g], score_err,
                                         iou_thr)

    # the heads on the graph's own RoIs and detections
    num_g = torch.tensor([n_g])
    k = int(g["num_dets"][0])
    heads = study.heads_on(e["feats"], g_rois, num_g, shapes, g["boxes"], g["labels"])
    valid = slice(0, n_g)
    bh = [t for t in g["box_head"]]
    rec["box_head_cls"] = err(heads["cls"][valid], bh[0][valid]) if bh else {}
    rec["box_head_reg"] = err(heads["reg"][valid], bh[1][valid]) if len(bh) > 1 else {}
    bd = {tuple(t.shape): t for t in g["box_decode"]}
    g_boxes = bd.get(tuple(heads["boxes"].shape))
    g_scores_cls = bd.get(tuple(heads["scores"].shape))
    if g_boxes is not None:
        rec["box_decode_px"] = err(heads["boxes"][0, valid], g_boxes[0, valid])
    if g_scores_cls is not None:
        rec["box_decode_score"] = err(heads["scores"][0, valid], g_scores_cls[0, valid])
    if "mask_logits" in heads and g["mask_logits"]:
        rec["mask_logits"] = err(heads["mask_logits"][:k], g["mask_logits"][0][:k])
        # probabilities of each detection's label: the graph's output, and the sigmoid of its logits in float32
        head = study.model.roi_head.mask_branch.mask_head
        labels = g["labels"][0, :k].clamp(min=0)
        ref = head.predict_masks(heads["mask_logits"][:k], labels)
        fp32_sigmoid = head.predict_masks(g["mask_logits"][0][:k], labels)
        rec["mask_probs"] = err(ref, g["masks"][0, :k])
        rec["mask_flips"] = {"pixels": ref.numel(), "graph": int(((ref > 0.5) != (g["masks"][0, :k] > 0.5)).sum()),
                             "fp32_sigmoid_of_graph_logits": int(((ref > 0.5) != (fp32_sigmoid > 0.5)).sum())}

    # final detections, traced to their RoIs
    de = e["dets"]
    ke = int(de.num_dets[0])
    ref = Detections(boxes=de.boxes[0, :ke], scores=de.scores[0, :ke], labels=de.labels[0, :ke].long())
    got = Detections(boxes=g["boxes"][0, :k], scores=g["scores"][0, :k], labels=g["labels"][0, :k].long())
    pairs = match_detections(ref, got)
    matched_g = {gi: ri for ri, gi in pairs}
    matched_e = {ri for ri, _ in pairs}
    e_src = source_rows(ref.boxes, ref.labels, e["boxes"][0])
    g_src = source_rows(got.boxes, got.labels, g_boxes[0] if g_boxes is not None else e["boxes"][0])
    e_rois, g_rois_valid = e["rois"][:n_e, 1:], g_rois[:n_g, 1:]

    def shared(roi: torch.Tensor, others: torch.Tensor) -> bool:
        return bool(len(others)) and float((others - roi).abs().amax(-1).min()) <= SAME_PX

    cases = collections.Counter()
    box_d, score_d, win_gaps = [], [], []
    for gi in range(k):
        ri = matched_g.get(gi)
        if ri is not None:
            bd_px = float((ref.boxes[ri] - got.boxes[gi]).abs().max())
            sd = float((ref.scores[ri] - got.scores[gi]).abs())
            box_d.append(bd_px)
            score_d.append(sd)
            if bd_px <= DET_BOX_PX and sd <= DET_SCORE:
                continue
            kind = "matched_off"
        else:
            kind = "graph_only"
        row = g_src[gi]
        own = shared(g_rois_valid[row], e_rois) if row >= 0 else False
        if kind == "matched_off" and own and e_src[ri] >= 0 and not shared(g_rois_valid[row], e_rois[e_src[ri]][None]):
            # both sides have both RoIs; another one won the final NMS: how close were they in eager?
            c = int(got.labels[gi])
            gap = float(e["scores"][0, e_src[ri], c] - heads["scores"][0, row, c])
            win_gaps.append(gap)
            cases["matched_off:other_shared_roi_won"] += 1
            continue
        cases[f"{kind}:{'shared_roi' if own else 'graph_only_roi'}"] += 1
    for ri in range(ke):
        if ri in matched_e:
            continue
        row = e_src[ri]
        own = shared(e_rois[row], g_rois_valid) if row >= 0 else False
        cases[f"eager_only:{'shared_roi' if own else 'eager_only_roi'}"] += 1
    rec["detections"] = {"eager": ke, "graph": k, "matched": len(pairs), "box_linf_px": box_d,
                         "score_diff": score_d, "differing": dict(cases),
                         "eager_score_gap_of_other_winner": win_gaps}
    return rec


def summarize(records: list[dict]) -> dict:
    s: dict = {"images": len(records)}
    for key in ("fpn", "rpn_cls", "rpn_score", "rpn_reg"):
        s[key] = merge([e for r in records for e in r[key]])
    for key in ("box_head_cls", "box_head_reg", "box_decode_px", "box_decode_score",
                "mask_logits", "mask_probs"):
        s[key] = merge([r[key] for r in records if r.get(key)])
    flips = collections.Counter()
    for r in records:
        flips.update(r.get("mask_flips", {}))
    if flips:
        s["mask_flips"] = dict(flips)
    prop = collections.Counter()
    for r in records:
        for side in ("graph", "eager"):
            p = r["proposals"].get(side)
            if isinstance(p, dict):
                for k, v in p.items():
                    if k == "moved_max_px":
                        prop[f"{side}_{k}"] = max(prop[f"{side}_{k}"], v)
                    elif isinstance(v, int) and k != "differs_rank_max":
                        prop[f"{side}_{k}"] += v
    s["proposals"] = dict(prop)
    det = collections.Counter()
    box, score, gaps, matched, ne, ng = [], [], [], 0, 0, 0
    for r in records:
        d = r["detections"]
        det.update(d["differing"])
        box += d["box_linf_px"]
        score += d["score_diff"]
        gaps += d["eager_score_gap_of_other_winner"]
        matched, ne, ng = matched + d["matched"], ne + d["eager"], ng + d["graph"]
    s["detections"] = {"eager": ne, "graph": ng, "matched": matched,
                       "matched_fraction": matched / max(ne, ng, 1),
                       "box_linf_px_mean": float(np.mean(box)) if box else None,
                       "box_linf_px_max": max(box) if box else None,
                       "score_diff_max": max(score) if score else None, "differing": dict(det),
                       "eager_score_gap_of_other_winner": sorted(round(g, 4) for g in gaps)}
    return s


def detection_ties(cfg, checkpoint: str, engine: Path, max_images: int, batch_size: int = 4) -> dict:
    """Final detections of ``engine`` against eager's, the differing ones classified (module docstring)."""
    from dettool.runtime import load_backend
    from dettool.runtime.torch_backend import TorchBackend

    eager = TorchBackend.from_checkpoint(cfg, checkpoint, "cpu")
    graph = load_backend("onnxruntime", engine, "cpu")
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=batch_size)
    thr, k_max = cfg.test.score_thr, cfg.test.max_per_img
    noise, unmatched, far = [], [], []  # unmatched: (score, cut); far: (box px, duplicate?)
    zero_area_twins = 0
    pairs_of_images, done = [], 0
    for images, _, metas in loader:
        refs, gots = eager.infer(images, metas), graph.infer(images, metas)
        pairs_of_images += list(zip(refs, gots))[: max_images - done]
        done = len(pairs_of_images)
        if done >= max_images:
            break
    for ref, got in pairs_of_images:
        pairs = match_detections(ref, got)
        for r, g in pairs:
            px = float((ref.boxes[r] - got.boxes[g]).abs().max())
            if px <= DET_BOX_PX:
                noise.append(float((ref.scores[r] - got.scores[g]).abs()))
                continue
            same = (ref.labels == got.labels[g]) & ((ref.boxes - got.boxes[g]).abs().amax(-1) <= DET_BOX_PX)
            far.append((px, bool(same.any())))
        for dets, other, idx in ((ref, got, {r for r, _ in pairs}), (got, ref, {g for _, g in pairs})):
            cut = float(dets.scores.min()) if len(dets) >= k_max else thr
            for j in sorted(set(range(len(dets))) - idx):
                # a zero-area box (clipped to the image border) has IoU 0/0 with its counterpart: the
                # matcher pairs it only when the two are within 1e-3 px, FP16 moves it further
                twin = (other.labels == dets.labels[j]) & ((other.boxes - dets.boxes[j]).abs().amax(-1) <= DET_BOX_PX)
                w, h = dets.boxes[j, 2] - dets.boxes[j, 0], dets.boxes[j, 3] - dets.boxes[j, 1]
                if bool(twin.any()) and float(w * h) == 0.0:
                    zero_area_twins += 1
                    continue
                unmatched.append((float(dets.scores[j]), cut))
    delta = max(noise, default=0.0)
    near = [sc for sc, cut in unmatched if sc <= cut + delta]
    return {"images": min(max_images, len(dataset)), "score_noise_max": delta,
            "matched_within_0.5px": len(noise), "unmatched_zero_area_with_twin": zero_area_twins,
            "unmatched": len(unmatched),
            "unmatched_within_noise_of_cut": len(near),
            "unmatched_scores_max": max((sc for sc, _ in unmatched), default=None),
            "matched_over_0.5px": len(far), "matched_over_0.5px_duplicate_pairing": sum(d for _, d in far),
            "matched_over_0.5px_max": max((px for px, _ in far), default=None)}


def first_divergence(summary: dict, rel_tol: float = 1e-2) -> str:
    """The first stage, in graph order, whose relative error exceeds ``rel_tol`` (FP16 carries ~1e-3)."""
    for key in ("fpn", "rpn_cls", "rpn_reg", "box_head_cls", "box_head_reg", "mask_logits"):
        e = summary.get(key) or {}
        if e and e["rel"] > rel_tol:
            return f"{key} (max rel err {e['rel']:.3g})"
    p = summary["proposals"]
    if p.get("graph_differs", 0) or p.get("eager_differs", 0):
        return "proposals (top-k / NMS selection)"
    return "none above the tolerance"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("config")
    ap.add_argument("checkpoint")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--max-images", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=4, help="padding of eval-engine's batches (default 4, as it)")
    ap.add_argument("--precision", choices=["fp16", "fp32", "both"], default="both")
    ap.add_argument("--traced", type=Path, help="cache of the traced FP32 graph with its module scopes")
    ap.add_argument("--engine", type=Path, help="compare this exported graph's final detections only (any detector)")
    ap.add_argument("--out", type=Path, default=Path("work_dirs/fp16/study.json"))
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    torch.set_grad_enabled(False)
    if args.engine is not None:
        result = detection_ties(cfg, args.checkpoint, args.engine, args.max_images, args.batch_size)
        print(json.dumps(result, indent=1))
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"config": args.config, "engine": str(args.engine), **result}, indent=1))
        return 0
    study = Study(cfg, args.checkpoint, args.traced)
    dataset = builder.build_dataset(cfg, "val")
    # eval-engine's batches: images zero-padded to the batch's largest, fed one by one to a batch-1 graph
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=args.batch_size)
    precisions = ["fp32", "fp16"] if args.precision == "both" else [args.precision]
    records: dict[str, list[dict]] = {p: [] for p in precisions}
    done = 0
    for batch, _, batch_metas in loader:
        for j in range(batch.shape[0]):
            if done >= args.max_images:
                break
            images, metas = batch[j:j + 1], batch_metas[j:j + 1]
            shapes = image_shapes_tensor(metas)
            for p in precisions:
                rec = study_image(study, images, shapes, p)
                rec["image"] = metas[0].get("file_name")
                records[p].append(rec)
            done += 1
            print(f"fp16_study: image {done}/{min(args.max_images, len(dataset))}", file=sys.stderr, flush=True)
        if done >= args.max_images:
            break
    result = {"config": args.config, "checkpoint": args.checkpoint, "overrides": args.overrides,
              "values": study.values}
    for p in precisions:
        summary = summarize(records[p])
        summary["first_divergence"] = first_divergence(summary)
        result[p] = {"summary": summary, "images": records[p]}
        print(f"== {p}: first divergence: {summary['first_divergence']}")
        print(json.dumps({k: v for k, v in summary.items() if k != "first_divergence"}, indent=1,
                         default=lambda x: None if isinstance(x, float) and math.isnan(x) else str(x)))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"fp16_study: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
