"""``dettool eval-engine``: an exported engine against the PyTorch model it came from.

Both run on the same val images (the config's val split, optionally its first ``max_images``):
COCO metrics of each and their two-sided difference (the parity checks), matched-detection
differences (``runtime.parity``), latency and throughput at batch 1 and batch N
(``runtime.latency``) and the engine file's size. The report goes to JSON and Markdown
(``runtime.report``), with a few val images showing the engine's detections.

The verdict rests on two separate checks, and says how many images and detections it rests on:

- "same detections" (``runtime.parity.detections_check``): matched fraction, box and score
  errors of the matched detections within limits per engine precision. It compares the two
  models' outputs directly, so it does not depend on the images' ground truth or on their number.
- "same AP": ``|dAP|`` (bbox AP, segm AP; AR@100/300/1000 for an RPN) within ``Tolerances``, with
  a 95% paired-bootstrap interval of dAP over the images (``evaluation.paired_bootstrap``).
  ``pass`` when the interval lies within +-tol, ``fail`` when it lies wholly outside,
  ``inconclusive`` otherwise: on a few images an AP difference is mostly a matter of which
  images were drawn (one FP16 graph on 16 held-out images: 0.7337 -> 0.7431), and the interval
  says so. The interval is of the *paired* difference: an engine whose detections match the
  model's gives the same matches on every image, hence a narrow (often zero-width) interval even
  on 16 images; it widens only as far as the detections differ. It covers the images evaluated,
  not images outside the set; the detections check speaks for those.

``passed`` (the CLI's exit status): no AP check fails, and either every AP check passes or the
detections check passes; when an AP check is inconclusive the verdict rests on the detections
check alone, and ``verdict`` says so. Same AP with different detections passes, with the
difference named in ``verdict``.

Measured (Faster R-CNN R-18 epoch 6, synthetic val, ONNX Runtime CPU, 500 resamples): the FP16
graph of the fixed exporter passes both checks on 16 and on 200 images (dAP 0.0000, 95%
[-0.0001, +0.0000] on 200); the FP16 graph of the defective float16 converter (boxes rounded to
float16, 0.25 px mean error) has dAP -0.0053, 95% [-0.0195, +0.0043] on 16 images and -0.0033,
95% [-0.0074, +0.0001] on 200: inconclusive both times (the old rule, |dAP| <= 0.003 alone, failed
it by 0.0003 on 200 images, a margin the images cannot resolve), and the detections check fails it. The
bootstrap costs 0.5-2 s there (1000 detections), 15-45 s for 20000 detections (GHM RetinaNet,
100 per image) on a loaded 2-core CPU.
"""
from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dettool.config.schema import Config, RPNConfig
from dettool.errors import BackendError
from dettool.evaluation.coco_eval import cocoeval_of, detection_metrics, detections_to_results
from dettool.evaluation.paired_bootstrap import BootstrapInterval, ImageMatches, image_matches, paired_bootstrap
from dettool.evaluation.proposal_eval import proposal_cocoeval
from dettool.io import file_sha256
from dettool.runtime import load_backend
from dettool.runtime.backend import Backend
from dettool.runtime.latency import measure_latency
from dettool.runtime.metadata import DeployMetadata
from dettool.runtime.parity import (
    DETECTION_TOLERANCES,
    DetectionCheck,
    DetectionTolerances,
    OutputDiff,
    detections_check,
)
from dettool.runtime.report import format_report, write_report
from dettool.runtime.torch_backend import TorchBackend
from dettool.trainer import builder
from dettool.visualization import draw_results

RPN_METRICS = ("AR@100", "AR@300", "AR@1000")
LATENCY_BATCHES = 4  # distinct preloaded batches per timed batch size (cycled)
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class Tolerances:
    """Largest accepted ``|metric_engine - metric_torch|`` (metrics in [0, 1]).

    Attributes:
        fp32: bbox AP (or RPN AR@N) of an FP32 engine.
        fp16: bbox AP (or RPN AR@N) of an FP16 engine (precision read from the deploy metadata).
        mask: segm AP, either precision.
        detections: limits of the "same detections" check (default: ``DETECTION_TOLERANCES`` of
            the engine's precision).
    """

    fp32: float = 0.001
    fp16: float = 0.003
    mask: float = 0.003
    detections: DetectionTolerances | None = None

    def for_detections(self, precision: str) -> DetectionTolerances:
        return self.detections or DETECTION_TOLERANCES["fp16" if precision == "fp16" else "fp32"]


@dataclass(frozen=True)
class ParityCheck:
    """One checked metric of the engine against the PyTorch model.

    Attributes:
        delta: ``|engine - torch|``; ``passed``: ``delta <= tol`` (the point estimate alone).
        status: the check's verdict, ``pass`` / ``fail`` / ``inconclusive`` (see ``ap_status``).
        low, high: 95% paired-bootstrap interval of ``engine - torch`` (None: not bootstrapped).
        num_images, num_resamples: what the interval rests on.
    """

    metric: str
    torch: float
    engine: float
    delta: float
    tol: float
    passed: bool
    status: str = ""
    low: float | None = None
    high: float | None = None
    num_images: int = 0
    num_resamples: int = 0

    def interval(self) -> str:
        """``95% [-0.0031, +0.0210] on 16 images`` (or that there is none)."""
        if self.low is None:
            return "no interval"
        return f"95% [{self.low:+.4f}, {self.high:+.4f}] on {self.num_images} images"

    def failure(self, backend: str) -> str:
        text = (f"{self.metric} differs by {self.delta:.4f} > {self.tol:g} ({backend} {self.engine:.4f}, "
                f"torch {self.torch:.4f}")
        return text + (f"; {self.interval()})" if self.low is not None else ")")

    def describe(self) -> str:
        """``bbox_AP +0.0094, 95% [...] on 16 images: inconclusive (+-0.0121 > tol 0.003)``."""
        text = f"{self.metric} {self.engine - self.torch:+.4f}, {self.interval()}: {self.status}"
        if self.status == "inconclusive" and self.low is not None:
            half = (self.high - self.low) / 2
            why = (f"+-{half:.4f} > tol {self.tol:g}" if half > self.tol else f"interval straddles +-{self.tol:g}")
            text += f" ({why})"
        elif self.status:
            text += f" (tol {self.tol:g})"
        return text


def ap_status(delta: float, tol: float, interval: BootstrapInterval | None) -> str:
    """``pass`` when ``|delta| <= tol`` and the interval lies within ``[-tol, tol]``, ``fail`` when
    the interval lies wholly outside it, else ``inconclusive`` (an equivalence test: the images
    either show the difference is within tolerance, or show it is not, or cannot tell). Without
    an interval, the point estimate decides."""
    if interval is None:
        return "pass" if abs(delta) <= tol else "fail"
    if abs(delta) <= tol and -tol <= interval.low and interval.high <= tol:
        return "pass"
    if interval.low > tol or interval.high < -tol:
        return "fail"
    return "inconclusive"


class _FirstImages(torch.utils.data.Dataset):
    """The first ``num`` images of a dataset (keys as ``EpochSampler`` yields them: ``(index, seed)``)."""

    def __init__(self, dataset, num: int) -> None:
        self.dataset, self.num = dataset, num

    def __len__(self) -> int:
        return self.num

    def __getitem__(self, key):
        return self.dataset[key]


def check_engine_matches_config(cfg: Config, meta: DeployMetadata, engine: Path) -> None:
    """``BackendError`` when the engine was exported with other classes, pre- or post-processing
    than ``cfg`` gives the PyTorch model (the comparison would measure the settings, not the engine)."""
    d, t = cfg.data, cfg.test
    pairs = [("model.num_classes", len(meta.class_names), cfg.model.num_classes),
             ("data.test_scale", meta.preprocess.test_scale, d.test_scale),
             ("data.keep_ratio", meta.preprocess.keep_ratio, d.keep_ratio),
             ("data.channel_order", meta.preprocess.channel_order, d.channel_order),
             ("data.mean", tuple(meta.preprocess.mean), tuple(d.mean)),
             ("data.std", tuple(meta.preprocess.std), tuple(d.std)),
             ("data.size_divisor", meta.preprocess.size_divisor, d.size_divisor),
             ("test.score_thr", meta.postprocess.score_thr, t.score_thr),
             ("test.nms_iou_thr", meta.postprocess.nms_iou_thr, t.nms_iou_thr),
             ("test.max_per_img", meta.postprocess.max_per_img, t.max_per_img),
             ("test.mask_thr", meta.postprocess.mask_thr, t.mask_thr),
             ("test.mask_paste", meta.postprocess.mask_paste, t.mask_paste)]
    for key, exported, given in pairs:
        if exported != given:
            raise BackendError(f"{engine}: exported with {key}={exported}, the config gives {given}; evaluate "
                               f"with the config it was exported from (or --set {key}=...)")


def parity_checks(torch_metrics: dict, engine_metrics: dict, precision: str, rpn: bool,
                  tolerances: Tolerances, intervals: dict[str, BootstrapInterval] | None = None) -> list[ParityCheck]:
    """bbox AP (and segm AP for mask models), or AR@100/300/1000 for an RPN, within tolerance;
    ``intervals``: the bootstrap interval of each metric's difference, where there is one."""
    box_tol = tolerances.fp16 if precision == "fp16" else tolerances.fp32
    keys = [(k, box_tol) for k in RPN_METRICS] if rpn else [("bbox_AP", box_tol), ("segm_AP", tolerances.mask)]
    checks = []
    for key, tol in keys:
        if key in torch_metrics or key in engine_metrics:
            a, b = torch_metrics.get(key, 0.0), engine_metrics.get(key, 0.0)
            interval = (intervals or {}).get(key)
            extra = {} if interval is None else {"low": interval.low, "high": interval.high,
                                                 "num_images": interval.num_images,
                                                 "num_resamples": interval.num_resamples}
            checks.append(ParityCheck(key, a, b, abs(b - a), tol, abs(b - a) <= tol,
                                      ap_status(b - a, tol, interval), **extra))
    return checks


def _matches_of(coco, results: list[dict], kind: str, image_ids: list[int]) -> ImageMatches | None:
    if kind == "proposals":
        ev = proposal_cocoeval(coco, results, image_ids=image_ids) if results else None
    else:
        ev = cocoeval_of(coco, results, kind, image_ids)
    return None if ev is None else image_matches(ev)


def metric_intervals(coco, results_torch: list[dict], results_engine: list[dict], image_ids: list[int], rpn: bool,
                     num_resamples: int, seed: int = BOOTSTRAP_SEED) -> dict[str, BootstrapInterval]:
    """The paired-bootstrap interval of ``engine - torch`` for each checked metric (bbox AP, segm
    AP when there are masks, AR@N for an RPN); a metric with no detections on one side has none."""
    if num_resamples <= 0:
        return {}
    with_masks = any(r.get("segmentation") is not None for r in results_torch + results_engine)
    kinds = ["proposals"] if rpn else ["bbox"] + (["segm"] if with_masks else [])
    out = {}
    for kind in kinds:
        a = _matches_of(coco, results_torch, kind, image_ids)
        b = _matches_of(coco, results_engine, kind, image_ids)
        if a is None or b is None:
            continue
        if kind == "proposals":
            for key in RPN_METRICS:
                max_det = int(key.split("@")[1])
                out[key] = paired_bootstrap(a, b, lambda m, i, n=max_det: m.average_recall(n, i), num_resamples,
                                            seed=seed)
        else:
            out[f"{kind}_AP"] = paired_bootstrap(a, b, lambda m, i: m.average_precision(i), num_resamples, seed=seed)
    return out


def overall_verdict(checks: list[ParityCheck], detections: DetectionCheck, backend: str,
                    basis: dict) -> tuple[bool, str, list[str]]:
    """``(passed, verdict, failures)`` from the AP checks and the detections check (module docstring)."""
    failed = [c for c in checks if c.status == "fail"]
    unsure = [c for c in checks if c.status == "inconclusive"]
    aps = "; ".join(c.describe() for c in checks)
    same = "the detections are the same" if detections.passed else detections.failure()
    where = (f"{basis['num_images']} images, {basis['torch_detections']} torch / {basis['engine_detections']} "
             f"{backend} detections, {basis['matched']} matched")
    if failed:
        failures = [c.failure(backend) for c in failed] + ([] if detections.passed else [detections.failure()])
        return False, f"FAILED ({where}): " + "; ".join(failures), failures
    if unsure:
        rest = f"verdict rests on the detections check ({', '.join(c.metric for c in unsure)} inconclusive)"
        if detections.passed:
            return True, f"PASSED ({where}); {rest}: {same}. {aps}", []
        failures = [f"{detections.failure()}; and {aps}"]
        return False, f"FAILED ({where}); {rest}: {same}. {aps}", failures
    if detections.passed:
        return True, f"PASSED ({where}): {same}, and the same AP: {aps}", []
    return True, f"PASSED on AP ({where}): {aps}; but {same}", []


def _bar(total: int, desc: str, unit: str, progress: bool) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=not progress or not sys.stderr.isatty())


def run_both(torch_backend: Backend, engine: Backend, loader, label_to_cat_id: list[int],
             progress: bool = True) -> tuple[list[dict], list[dict], OutputDiff]:
    """Both backends over ``loader``: COCO results of each and the matched-detection differences."""
    results_torch, results_engine, diff = [], [], OutputDiff()
    with _bar(len(loader.dataset), f"torch + {engine.name}", "img", progress) as bar:
        for images, _, metas in loader:
            dets_torch = torch_backend.infer(images, metas)
            dets_engine = engine.infer(images, metas)
            for ref, got in zip(dets_torch, dets_engine):
                diff.add(ref, got)
            results_torch += detections_to_results(dets_torch, metas, label_to_cat_id)
            results_engine += detections_to_results(dets_engine, metas, label_to_cat_id)
            bar.update(len(metas))
    return results_torch, results_engine, diff


def preload_batches(cfg: Config, dataset, batch_size: int, num_batches: int) -> list[tuple[torch.Tensor, list[dict]]]:
    """The first ``num_batches`` full batches of ``dataset`` (fewer when it is short)."""
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=batch_size)
    batches = []
    for images, _, metas in loader:
        if len(metas) < batch_size and batches:
            break
        batches.append((images, metas))
        if len(batches) == num_batches:
            break
    return batches


def time_backends(cfg: Config, dataset, backends: list[Backend], batch_sizes: list[int], warmup: int, iters: int,
                  progress: bool = True) -> dict:
    """``{backend name: {"batch_<B>": LatencyStats dict}}`` for each backend and batch size."""
    latency: dict = {b.name: {} for b in backends}
    with _bar(len(backends) * len(batch_sizes) * (warmup + iters), "latency", "call", progress) as bar:
        for batch_size in batch_sizes:
            batches = preload_batches(cfg, dataset, batch_size, LATENCY_BATCHES)
            for backend in backends:
                stats = measure_latency(backend, batches, warmup, iters, on_step=lambda: bar.update(1))
                latency[backend.name][f"batch_{stats.batch_size}"] = stats.to_dict()
    return latency


def _metrics(coco, results: list[dict], rpn: bool, image_ids: list[int]) -> dict:
    metrics = detection_metrics(coco, results, proposals_only=rpn, image_ids=image_ids)
    return {k: v for k, v in metrics.items() if not k.startswith("_")}


def build_report(engine: Path, engine_backend: Backend, torch_backend: Backend, cfg: Config, checkpoint: str | Path,
                 num_images: int, batch_size: int, metrics: dict, checks: list[ParityCheck], tolerances: Tolerances,
                 diff: OutputDiff, latency: dict, bootstrap_s: float = 0.0) -> dict:
    """The JSON-ready report (see ``evaluate_engine``)."""
    meta = engine_backend.meta
    outputs = diff.summary()
    detection_tol = tolerances.for_detections(meta.precision)
    detections = detections_check(outputs, detection_tol)
    basis = {"num_images": num_images, "torch_detections": outputs["torch_detections"],
             "engine_detections": outputs["engine_detections"], "matched": outputs["matched"]}
    passed, verdict, failures = overall_verdict(checks, detections, engine_backend.name, basis)
    return {
        "engine": str(engine), "backend": engine_backend.name, "engine_size_mb": engine.stat().st_size / 2**20,
        "model_type": meta.model_type, "precision": meta.precision, "flavour": meta.flavour,
        "dynamic_batch": meta.dynamic_batch, "config": cfg.source, "checkpoint": str(checkpoint),
        "checkpoint_matches_engine": (not meta.checkpoint_sha256) or file_sha256(checkpoint) == meta.checkpoint_sha256,
        "device": str(torch_backend.device),
        "engine_providers": list(getattr(engine_backend, "providers", [str(engine_backend.device)])),
        "num_images": num_images, "batch_size": batch_size, "metrics": metrics,
        "parity": [asdict(c) for c in checks], "tolerances": dict(asdict(tolerances), detections=asdict(detection_tol)),
        "outputs": outputs, "latency": latency, "basis": basis,
        "detections_check": detections.to_dict(),
        "bootstrap": {"num_resamples": max((c.num_resamples for c in checks), default=0), "seed": BOOTSTRAP_SEED,
                      "seconds": bootstrap_s},
        "passed": passed, "verdict": verdict, "failures": failures,
    }


def default_report_path(engine: str | Path) -> Path:
    """``model.onnx`` -> ``model.eval.json`` (beside the engine)."""
    return Path(engine).with_suffix(".eval.json")


def evaluate_engine(cfg: Config, checkpoint: str | Path, engine: str | Path, *, backend: str = "onnxruntime",
                    out: str | Path | None = None, batch_size: int = 4, max_images: int | None = None,
                    warmup: int = 2, iters: int = 10, device: str | None = None,
                    tolerances: Tolerances = Tolerances(), bootstrap: int = 500,
                    show_dir: str | Path | None = None, num_show: int = 8, progress: bool = True) -> dict:
    """Compare ``engine`` with the PyTorch model of ``cfg`` + ``checkpoint`` on the val split.

    Args:
        cfg: the config the engine was exported from (its val split is used).
        checkpoint: the checkpoint the engine was exported from.
        engine: the exported file (``.onnx`` for onnxruntime, dettool engine for tensorrt).
        backend: ``onnxruntime`` or ``tensorrt``.
        out: report JSON (default ``<engine stem>.eval.json`` beside the engine); the Markdown
            table goes beside it (``.md``).
        batch_size: batch of the accuracy run and of the second latency measurement.
        max_images: evaluate the first ``max_images`` val images only.
        warmup, iters: untimed and timed ``infer`` calls per backend and batch size (``iters=0``:
            no latency measurement).
        device: ``cpu`` / ``cuda`` for both backends (default: CUDA when available).
        tolerances: parity thresholds.
        bootstrap: resamples of the AP difference's interval (0: none; the point estimate decides).
        show_dir: where to draw the engine's detections on ``num_show`` images (default
            ``<report stem>_show/`` beside the report; ``num_show=0``: none).

    Returns: the report dict (also written): ``passed`` (see the module docstring), ``verdict``
    (one line: what it rests on and why), ``failures`` (what failed), ``basis`` (images and
    detections), ``parity`` (the AP checks with ``status`` and interval), ``detections_check``.
    """
    engine = Path(engine)
    engine_backend = load_backend(backend, engine, device)
    meta = engine_backend.meta
    check_engine_matches_config(cfg, meta, engine)
    torch_backend = TorchBackend.from_checkpoint(cfg, checkpoint, device)
    rpn = isinstance(cfg.model, RPNConfig)
    dataset = builder.build_dataset(cfg, "val")
    num = min(len(dataset), max_images) if max_images else len(dataset)
    subset = _FirstImages(dataset, num) if num < len(dataset) else dataset
    image_ids = list(dataset.image_ids[:num])

    print(f"dettool: running torch and {engine_backend.name} on {num} val images (batch {batch_size})", flush=True)
    loader = builder.build_dataloader(cfg, subset, train=False, batch_size=batch_size)
    results_torch, results_engine, diff = run_both(torch_backend, engine_backend, loader, dataset.cat_ids, progress)
    metrics_torch = _metrics(dataset.coco, results_torch, rpn, image_ids)
    metrics_engine = _metrics(dataset.coco, results_engine, rpn, image_ids)
    start = time.perf_counter()
    intervals = metric_intervals(dataset.coco, results_torch, results_engine, image_ids, rpn, bootstrap)
    bootstrap_s = time.perf_counter() - start
    checks = parity_checks(metrics_torch, metrics_engine, meta.precision, rpn, tolerances, intervals)

    latency = {}
    if iters > 0:
        sizes = sorted({1, batch_size})
        print(f"dettool: timing infer at batch {' and '.join(map(str, sizes))} ({warmup} warm-up + {iters} timed "
              f"calls each)", flush=True)
        latency = time_backends(cfg, subset, [torch_backend, engine_backend], sizes, warmup, iters, progress)

    report = build_report(engine, engine_backend, torch_backend, cfg, checkpoint, num, batch_size,
                          {"torch": metrics_torch, "engine": metrics_engine}, checks, tolerances, diff, latency,
                          bootstrap_s)
    if not report["checkpoint_matches_engine"]:
        print(f"dettool: note: {checkpoint} is not the checkpoint {engine.name} was exported from "
              f"({meta.source_checkpoint}); the comparison is between different weights", file=sys.stderr)
    out = Path(out) if out else default_report_path(engine)
    json_path, md_path = write_report(report, out)
    print(format_report(report))
    print(f"dettool: wrote {json_path} and {md_path}")
    if num_show > 0:
        draw_results(dataset, results_engine, Path(show_dir) if show_dir else out.with_name(out.stem + "_show"),
              min(num_show, num))
    return report
