"""Every synth detector (configs/*_synth.yaml) on a device against the same model on the CPU.

Part ``deploy`` of tests/gpu/check_gpu.py. Each detector is built by dettool's builder with
random weights (``random_detector``, fixed seed; no checkpoint, no backbone weights file) and
run on the same few synthetic images (dettool's generator, one padded batch of varied sizes)
at ``test.score_thr=0.001``, so that even random heads give dozens of detections per image:

- its deploy graph (``exporters.deploy.build_deploy_model``, run eagerly by torch): the raw
  outputs of ``model(images)`` (FPN features and head maps) and the detections of the graph's
  fixed-size outputs, matched one to one by ``runtime.parity.OutputDiff``;
- ``model.predict`` through the torch backend (``runtime.torch_backend.TorchBackend``), matched
  the same way. Fast R-CNN has no deploy graph (its proposals come from a file): it runs this
  path only, on random proposals written to a proposals file.

Tolerances (device vs CPU, float32, TF32 off; see ``Tolerance``): raw outputs within
1e-3 x max(1, max |CPU|) per tensor; at least 97 % of the detections of each side matched
(IoU >= 0.5, same label: NMS and top-k near-ties may flip a few); at least 97 % of the CPU's
detections matched within 0.02 px (L-inf, original pixels) and 5e-4 in score; masks: mean
1 - mask IoU of matched pairs <= 0.01; at least 10 CPU detections per image, so the check
cannot pass on empty outputs. (A relative 1e-5 perturbation of every weight moves boxes by at
most 7e-3 px and scores by 3e-5 on these models, and flips no detection.)
"""
from __future__ import annotations

import copy
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))

from detector_helpers import random_detector  # noqa: E402

from dettool.config import load_config  # noqa: E402
from dettool.config import schema as S  # noqa: E402
from dettool.data.proposals import save_proposals  # noqa: E402
from dettool.data.synth import generate  # noqa: E402
from dettool.exporters.deploy.detector import build_deploy_model  # noqa: E402
from dettool.runtime.parity import OutputDiff  # noqa: E402
from dettool.runtime.torch_backend import TorchBackend  # noqa: E402
from dettool.structures.detections import DetOutputs, image_shapes_tensor, outputs_to_detections  # noqa: E402
from dettool.trainer import builder  # noqa: E402

SYNTH_CONFIGS = sorted((REPO / "configs").glob("*_synth.yaml"))
PROPOSALS_PER_IMAGE = 300


@dataclass(frozen=True)
class Tolerance:
    """What a device run must meet against the CPU run of the same model and batch."""

    raw_rel: float = 1e-3  # max |device - CPU| / max(1, max |CPU|), per raw output tensor
    min_matched: float = 0.97  # matched detections / detections, on each side
    min_close: float = 0.97  # matched pairs within box_px and score / detections of the CPU
    box_px: float = 2e-2  # L-inf box difference of a matched pair, original-image pixels
    score: float = 5e-4  # score difference of a matched pair
    mask_mean: float = 1e-2  # mean (1 - mask IoU) over matched pairs
    min_dets_per_image: int = 10  # fewer: the comparison would say little


TOLERANCE = Tolerance()


def detector_name(config: Path) -> str:
    return config.stem.removesuffix("_synth")


def synth_images(root: Path, num_images: int) -> Path:
    """``num_images`` synthetic val images (and one train image) under ``root``, with a proposals
    file of ``PROPOSALS_PER_IMAGE`` random boxes per image for Fast R-CNN."""
    generate(root, num_train=1, num_val=num_images, seed=3)
    g = torch.Generator().manual_seed(0)
    proposals = {}
    for image in json.loads((root / "annotations" / "val.json").read_text())["images"]:
        size = torch.tensor([image["width"], image["height"]], dtype=torch.float32)
        xy = torch.rand(PROPOSALS_PER_IMAGE, 2, generator=g) * size * 0.8
        wh = (0.05 + 0.5 * torch.rand(PROPOSALS_PER_IMAGE, 2, generator=g)) * size
        score = torch.rand(PROPOSALS_PER_IMAGE, 1, generator=g)
        proposals[image["id"]] = torch.cat([xy, torch.minimum(xy + wh, size), score], dim=1)
    save_proposals(root / "proposals.pt", proposals)
    return root


def synth_overrides(root: Path, scale: str | None) -> list[str]:
    """Point a shipped synth config at ``root``; random backbone; low score threshold."""
    overrides = [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
                 f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
                 f"data.val.proposals_file={root / 'proposals.pt'}", "data.synth=null", "data.num_workers=0",
                 "model.backbone.weights=null", "test.score_thr=0.001"]
    if scale:
        overrides.append(f"data.test_scale={scale}")
    return overrides


def load_batch(cfg) -> tuple[torch.Tensor, list[dict]]:
    """All val images of ``cfg`` in one padded batch."""
    dataset = builder.build_dataset(cfg, "val")
    images, _, metas = next(iter(builder.build_dataloader(cfg, dataset, train=False, batch_size=len(dataset))))
    return images, metas


def flat_tensors(out) -> list[torch.Tensor]:
    """The tensors of a nested tuple / list of raw outputs, in order (None skipped)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [t for o in out for t in flat_tensors(o)]
    return []


def raw_difference(ref, got) -> float:
    """Largest ``max |got - ref| / max(1, max |ref|)`` over the raw output tensors."""
    ref, got = flat_tensors(ref), flat_tensors(got)
    assert len(ref) == len(got) and ref, f"{len(got)} raw outputs vs {len(ref)} on the CPU"
    worst = 0.0
    for r, g in zip(ref, got):
        assert r.shape == g.shape, f"raw output {tuple(g.shape)} vs {tuple(r.shape)} on the CPU"
        if r.numel():
            diff = (g.detach().float().cpu() - r.detach().float()).abs().max().item()
            worst = max(worst, diff / max(1.0, r.detach().abs().max().item()))
    return worst


def deploy_detections(deploy, images: torch.Tensor, metas: list[dict], device: torch.device):
    with torch.no_grad():
        out = deploy(images.to(device), image_shapes_tensor(metas, device))
    out = [t.cpu() for t in out]
    return outputs_to_detections(DetOutputs(*out[:4], masks=out[4] if len(out) > 4 else None), metas)


def compare_detections(ref: list, got: list, tol: Tolerance = TOLERANCE) -> tuple[str, dict, list[str]]:
    """Match ``got`` (device) to ``ref`` (CPU) image by image.

    Returns: the detail line, the numbers behind it (``OutputDiff.summary`` plus counts) and
    what is out of ``tol`` (empty when the detections agree).
    """
    diff = OutputDiff(iou_thr=0.5)
    for r, g in zip(ref, got, strict=True):
        diff.add(r, g)
    s = diff.summary()
    num_ref, num_got = sum(len(r) for r in ref), sum(len(g) for g in got)
    close = sum(b <= tol.box_px and d <= tol.score for b, d in zip(diff.box_linf, diff.score_diff))
    s.update(num_cpu=num_ref, num_device=num_got, num_close=close)
    box, score, mask = s.get("box_linf_px_max"), s.get("score_diff_max"), s.get("mask_diff_mean")
    detail = f"{diff.matched}/{num_ref} matched" + ("" if num_got == num_ref else f" ({num_got} on device)")
    detail += "" if close == diff.matched else f", {close} close"
    detail += f", box {box or 0.0:.1e} px, score {score or 0.0:.1e}" + ("" if mask is None else f", mask {mask:.1e}")
    failures = []
    if num_ref < tol.min_dets_per_image * len(ref):
        failures.append(f"only {num_ref} CPU detections on {len(ref)} images")
    if diff.matched < tol.min_matched * max(num_ref, num_got):
        failures.append(f"too few matched (< {tol.min_matched:.0%})")
    if close < tol.min_close * num_ref:
        failures.append(f"too few within {tol.box_px} px / {tol.score} (< {tol.min_close:.0%})")
    if mask is not None and mask > tol.mask_mean:
        failures.append(f"masks differ (mean 1 - IoU > {tol.mask_mean})")
    return detail, s, failures


def compare_detector(cfg, device: torch.device, seed: int = 0, tol: Tolerance = TOLERANCE,
                     model: torch.nn.Module | None = None) -> tuple[str, dict]:
    """One detector's deploy graph and ``predict`` on ``device`` vs on the CPU (``model``: the
    device-side model instead of a copy of the CPU one, to test that differences are caught).

    Returns: the detail line and its numbers; AssertionError naming what is out of ``tol``.
    """
    cpu_model = random_detector(cfg, seed)
    dev_model = copy.deepcopy(cpu_model if model is None else model)
    images, metas = load_batch(cfg)
    values: dict = {"images": list(images.shape)}
    details, failures = [], []
    fast_rcnn = isinstance(cfg.model, S.TwoStageConfig) and cfg.model.rpn_head is None
    if not fast_rcnn:  # Fast R-CNN reads proposals from a file: no deploy graph, predict only
        cpu_deploy, dev_deploy = build_deploy_model(cpu_model), build_deploy_model(dev_model).to(device)
        with torch.no_grad():
            raw = raw_difference(cpu_deploy.model(images), dev_deploy.model(images.to(device)))
        values["raw_rel_max"] = raw
        if raw > tol.raw_rel:
            failures.append(f"raw outputs differ by {raw:.1e} x max(1, max |CPU|) > {tol.raw_rel}")
        detail, values["deploy"], bad = compare_detections(
            deploy_detections(cpu_deploy, images, metas, torch.device("cpu")),
            deploy_detections(dev_deploy, images, metas, device), tol)
        details += [f"raw {raw:.1e}", f"deploy {detail}"]
        failures += [f"deploy: {b}" for b in bad]
    ref = TorchBackend(cpu_model, "cpu").infer(images, metas)
    got = [_to_cpu(d) for d in TorchBackend(dev_model, device).infer(images, metas)]
    detail, values["predict"], bad = compare_detections(ref, got, tol)
    details.append(f"predict {detail}" if not fast_rcnn else f"predict (no deploy graph) {detail}")
    failures += [f"predict: {b}" for b in bad]
    assert not failures, f"{'; '.join(failures)} | {'; '.join(details)}"
    return "; ".join(details), values


def _to_cpu(det):
    return type(det)(det.boxes.cpu(), det.scores.cpu(), det.labels.cpu(),
                     masks=det.masks.cpu() if det.masks is not None else None)


def select_configs(names: list[str] | None) -> list[Path]:
    """The synth configs named (by ``detector_name``), all when ``names`` is None."""
    known = {detector_name(c): c for c in SYNTH_CONFIGS}
    if unknown := sorted(set(names or ()) - set(known)):
        raise ValueError(f"unknown detectors {unknown}; the synth detectors are {', '.join(known)}")
    return [c for name, c in known.items() if names is None or name in names]


def deploy_checks(checker, device: torch.device, root: Path, num_images: int, scale: str | None,
                  names: list[str] | None = None) -> None:
    """A row for the synthetic images, then one per synth detector (``names``: only these)."""
    configs = select_configs(names)
    def images() -> str:
        val = json.loads((synth_images(root, num_images) / "annotations" / "val.json").read_text())
        sizes = ", ".join(f"{i['width']}x{i['height']}" for i in val["images"])
        return f"{sizes} px, {len(val['annotations'])} objects (dettool.data.synth, seed 3), scale {scale or 'config'}"
    checker.run(f"synthetic val images x{num_images}", images)
    for config in configs:
        cfg = load_config(config, synth_overrides(root, scale))
        checker.run(f"{detector_name(config)} {device.type} vs cpu", lambda: compare_detector(cfg, device))
