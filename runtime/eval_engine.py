"""``dettool eval-engine``: an exported engine against the PyTorch model it came from.

Both run on the same val images (the config's val split, optionally its first ``max_images``):
COCO metrics of each and their two-sided difference (the parity checks), matched-detection
differences (``runtime.parity``), latency and throughput at batch 1 and batch N
(``runtime.latency``) and the engine file's size. The report goes to JSON and Markdown
(``runtime.report``), with a few val images showing the engine's detections.
"""
from __future__ import annotations

import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from dettool.config.schema import Config, RPNConfig
from dettool.errors import BackendError
from dettool.evaluation.coco_eval import detection_metrics, detections_to_results
from dettool.io import file_sha256
from dettool.runtime import load_backend
from dettool.runtime.backend import Backend
from dettool.runtime.latency import measure_latency
from dettool.runtime.metadata import DeployMetadata
from dettool.runtime.parity import OutputDiff
from dettool.runtime.report import format_report, write_report
from dettool.runtime.torch_backend import TorchBackend
from dettool.trainer import builder
from dettool.visualization import draw_results

RPN_METRICS = ("AR@100", "AR@300", "AR@1000")
LATENCY_BATCHES = 4  # distinct preloaded batches per timed batch size (cycled)


@dataclass(frozen=True)
class Tolerances:
    """Largest accepted ``|metric_engine - metric_torch|`` (metrics in [0, 1]).

    Attributes:
        fp32: bbox AP (or RPN AR@N) of an FP32 engine.
        fp16: bbox AP (or RPN AR@N) of an FP16 engine (precision read from the deploy metadata).
        mask: segm AP, either precision.
    """

    fp32: float = 0.001
    fp16: float = 0.003
    mask: float = 0.003


@dataclass(frozen=True)
class ParityCheck:
    """One checked metric of the engine against the PyTorch model."""

    metric: str
    torch: float
    engine: float
    delta: float
    tol: float
    passed: bool

    def failure(self, backend: str) -> str:
        return (f"{self.metric} differs by {self.delta:.4f} > {self.tol:g} ({backend} {self.engine:.4f}, "
                f"torch {self.torch:.4f})")


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
                  tolerances: Tolerances) -> list[ParityCheck]:
    """bbox AP (and segm AP for mask models), or AR@100/300/1000 for an RPN, within tolerance."""
    box_tol = tolerances.fp16 if precision == "fp16" else tolerances.fp32
    keys = [(k, box_tol) for k in RPN_METRICS] if rpn else [("bbox_AP", box_tol), ("segm_AP", tolerances.mask)]
    checks = []
    for key, tol in keys:
        if key in torch_metrics or key in engine_metrics:
            a, b = torch_metrics.get(key, 0.0), engine_metrics.get(key, 0.0)
            checks.append(ParityCheck(key, a, b, abs(b - a), tol, abs(b - a) <= tol))
    return checks


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
                 diff: OutputDiff, latency: dict) -> dict:
    """The JSON-ready report (see ``evaluate_engine``)."""
    meta = engine_backend.meta
    return {
        "engine": str(engine), "backend": engine_backend.name, "engine_size_mb": engine.stat().st_size / 2**20,
        "model_type": meta.model_type, "precision": meta.precision, "flavour": meta.flavour,
        "dynamic_batch": meta.dynamic_batch, "config": cfg.source, "checkpoint": str(checkpoint),
        "checkpoint_matches_engine": (not meta.checkpoint_sha256) or file_sha256(checkpoint) == meta.checkpoint_sha256,
        "device": str(torch_backend.device),
        "engine_providers": list(getattr(engine_backend, "providers", [str(engine_backend.device)])),
        "num_images": num_images, "batch_size": batch_size, "metrics": metrics,
        "parity": [asdict(c) for c in checks], "tolerances": asdict(tolerances),
        "outputs": diff.summary(), "latency": latency,
        "passed": all(c.passed for c in checks),
        "failures": [c.failure(engine_backend.name) for c in checks if not c.passed],
    }


def default_report_path(engine: str | Path) -> Path:
    """``model.onnx`` -> ``model.eval.json`` (beside the engine)."""
    return Path(engine).with_suffix(".eval.json")


def evaluate_engine(cfg: Config, checkpoint: str | Path, engine: str | Path, *, backend: str = "onnxruntime",
                    out: str | Path | None = None, batch_size: int = 4, max_images: int | None = None,
                    warmup: int = 2, iters: int = 10, device: str | None = None,
                    tolerances: Tolerances = Tolerances(), show_dir: str | Path | None = None, num_show: int = 8,
                    progress: bool = True) -> dict:
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
        show_dir: where to draw the engine's detections on ``num_show`` images (default
            ``<report stem>_show/`` beside the report; ``num_show=0``: none).

    Returns: the report dict (also written): ``passed`` is False when a parity check failed,
    ``failures`` then says which.
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
    checks = parity_checks(metrics_torch, metrics_engine, meta.precision, rpn, tolerances)

    latency = {}
    if iters > 0:
        sizes = sorted({1, batch_size})
        print(f"dettool: timing infer at batch {' and '.join(map(str, sizes))} ({warmup} warm-up + {iters} timed "
              f"calls each)", flush=True)
        latency = time_backends(cfg, subset, [torch_backend, engine_backend], sizes, warmup, iters, progress)

    report = build_report(engine, engine_backend, torch_backend, cfg, checkpoint, num, batch_size,
                          {"torch": metrics_torch, "engine": metrics_engine}, checks, tolerances, diff, latency)
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
