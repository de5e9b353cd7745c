"""``dettool infer``: a model (deploy graph, engine or checkpoint) on one's own images.

Inputs are image files, folders (searched recursively for image suffixes) and glob patterns.
Each readable image goes through ``Detector``; an unreadable one is named in one warning line
and skipped. Written into the output folder, and nowhere else:

- ``results.json``: COCO-format results, one dict per detection (``image_id``, ``file_name``,
  ``category_id`` from the model's metadata, xywh ``bbox``, ``score``, ``segmentation`` RLE for
  masks); ``pycocotools``' ``COCO.loadRes`` reads it as it is;
- ``images.json``: ``[{"id", "file_name", "path", "height", "width"}]``, the images results refer to;
- ``vis/<name>.jpg``: each image with its detections drawn (scores >= ``draw_thr``);
- ``summary.json`` and ``summary.md``: counts per class, skipped files, time per image, and with
  an annotation file the COCO metrics of the results against it.

Image names are paths relative to the folder given (a file's own name otherwise); with an
annotation file (``ann_file``) the images take its ids by that name, so the results evaluate
against it directly.
"""
from __future__ import annotations

import glob
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from PIL import Image
from tqdm import tqdm

from dettool.data.coco import load_image
from dettool.errors import DataError
from dettool.io import atomic_write_bytes
from dettool.runtime.detector import DetectionResult, Detector
from dettool.visualization import draw_detections

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
GLOB_CHARS = "*?["


def write_text(text: str, path: Path) -> None:
    atomic_write_bytes(text.encode("utf-8"), path)


def warn(message: str) -> None:
    print(f"dettool: warning: {message}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class InputImage:
    """One image to run: its file and the name results and pictures use."""

    path: Path
    name: str


def collect_inputs(inputs: Sequence[str], exclude: Path | None = None) -> list[InputImage]:
    """Expand ``inputs`` (files, folders, glob patterns) into images, in the order given (a
    folder's files sorted), each file once, none from inside ``exclude`` (the output folder: a
    second run must not read the first one's pictures). A missing path or a pattern matching
    nothing is warned about; ``DataError`` when nothing at all is found."""
    found: list[InputImage] = []
    seen: set[Path] = set()
    excluded = exclude.resolve() if exclude is not None else None

    def add(path: Path, name: str) -> None:
        key = path.resolve()
        if excluded is not None and key.is_relative_to(excluded):
            return
        if key not in seen:
            seen.add(key)
            found.append(InputImage(path, name))

    for text in inputs:
        path = Path(text)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not files:
                warn(f"{path}: no image files in this folder ({', '.join(IMAGE_SUFFIXES)})")
            for p in files:
                add(p, p.relative_to(path).as_posix())
        elif path.is_file():
            add(path, path.name)
        elif any(c in text for c in GLOB_CHARS):
            matches = sorted(Path(m) for m in glob.glob(text, recursive=True) if Path(m).is_file())
            if not matches:
                warn(f"{text}: the pattern matches no file")
            for p in matches:
                add(p, p.name)
        else:
            warn(f"{path}: no such file or folder")
    if not found:
        raise DataError(f"no images found in {', '.join(inputs) or 'the inputs'}")
    return found


def unique_names(images: list[InputImage]) -> list[InputImage]:
    """Make names unique (``a.jpg``, ``a_2.jpg``): two folders may hold the same file name."""
    taken: set[str] = set()
    out = []
    for img in images:
        name, stem, suffix, n = img.name, Path(img.name).with_suffix("").as_posix(), Path(img.name).suffix, 1
        while name in taken:
            n += 1
            name = f"{stem}_{n}{suffix}"
        taken.add(name)
        out.append(InputImage(img.path, name))
    return out


def image_ids_from(ann_file: str | Path, images: list[InputImage]) -> tuple[dict[str, int], object]:
    """``{name: image id}`` for the images ``ann_file`` lists (by relative name, else by file
    name), and the loaded COCO ground truth."""
    from dettool.data.coco import load_coco

    coco = load_coco(ann_file)
    by_name = {info["file_name"]: image_id for image_id, info in coco.imgs.items()}
    by_base = {Path(name).name: image_id for name, image_id in by_name.items()}
    ids = {}
    for img in images:
        image_id = by_name.get(img.name, by_base.get(Path(img.name).name))
        if image_id is not None:
            ids[img.name] = image_id
    return ids, coco


def _draw(image: Image.Image, result: DetectionResult, detector: Detector, draw_thr: float) -> Image.Image:
    return draw_detections(image, result.boxes, result.scores, result.labels, detector.class_names, draw_thr,
                           masks=result.masks)


def summary_table(summary: dict) -> str:
    """The run as Markdown: detections per class, then totals (and metrics with an annotation file)."""
    lines = ["| class | detections |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in summary["detections_per_class"].items()]
    lines += ["", f"{summary['num_images']} images, {summary['num_detections']} detections "
              f"(score >= {summary['score_thr']:g}), {len(summary['skipped'])} skipped, "
              f"{summary['seconds_per_image'] * 1000:.1f} ms per image ({summary['backend']})"]
    if summary.get("metrics"):
        lines += ["", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.4f} |" for k, v in summary["metrics"].items()]
    return "\n".join(lines)


def run_infer(detector: Detector, inputs: Sequence[str], out_dir: str | Path, *, batch_size: int = 1,
              score_thr: float | None = None, draw_thr: float = 0.3, draw: bool = True,
              ann_file: str | Path | None = None, progress: bool = True) -> dict:
    """Run ``detector`` on ``inputs`` and write the results into ``out_dir`` (see the module docstring).

    Args:
        detector: the model.
        inputs: image files, folders and glob patterns.
        out_dir: the output folder (created).
        batch_size: images per backend call.
        score_thr: keep detections scoring at least this (default: all the model returns, i.e.
            above its ``test.score_thr``).
        draw_thr: lowest score drawn on the pictures.
        draw: write the pictures.
        ann_file: a COCO annotation file of the images: ids are taken from it and the results
            evaluated against it.

    Returns: the summary dict (also written as ``summary.json``).
    """
    out_dir = Path(out_dir)
    images = unique_names(collect_inputs(inputs, exclude=out_dir))
    ids, coco = image_ids_from(ann_file, images) if ann_file else ({}, None)
    next_id = max(list(ids.values()) + [0]) + 1 if ann_file else 1
    vis_dir = out_dir / "vis"
    out_dir.mkdir(parents=True, exist_ok=True)
    results, image_rows, skipped = [], [], []
    counts = {name: 0 for name in detector.class_names}
    start = time.perf_counter()
    bar = tqdm(total=len(images), desc="infer", unit="img", dynamic_ncols=True,
               disable=not progress or not sys.stderr.isatty())

    def flush(batch: list[tuple[InputImage, Image.Image]]) -> None:
        nonlocal next_id
        for (item, img), result in zip(batch, detector.predict([img for _, img in batch], score_thr)):
            result.file_name = item.name
            image_id = ids.get(item.name)
            if image_id is None:
                image_id, next_id = next_id, next_id + 1
            image_rows.append({"id": image_id, "file_name": item.name, "path": str(item.path),
                               "height": img.height, "width": img.width})
            results.extend(result.to_coco(image_id))
            for name in result.class_names:
                counts[name] += 1
            if draw:
                target = (vis_dir / item.name).with_suffix(".jpg")
                target.parent.mkdir(parents=True, exist_ok=True)
                _draw(img, result, detector, draw_thr).save(target, quality=90)
        bar.update(len(batch))

    batch: list[tuple[InputImage, Image.Image]] = []
    for item in images:
        try:
            batch.append((item, load_image(item.path)))
        except DataError as exc:
            warn(f"{exc}; skipped")
            skipped.append({"path": str(item.path), "reason": str(exc)})
            bar.update(1)
            continue
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)
    bar.close()
    seconds = time.perf_counter() - start
    if not image_rows:
        raise DataError(f"none of the {len(images)} input files could be read as an image")

    write_text(json.dumps(results), out_dir / "results.json")
    write_text(json.dumps(image_rows, indent=1, ensure_ascii=False), out_dir / "images.json")
    summary = {
        "backend": detector.backend.name, "num_images": len(image_rows), "num_detections": len(results),
        "score_thr": score_thr if score_thr is not None else detector.postprocess.score_thr,
        "detections_per_class": counts, "skipped": skipped, "seconds": seconds,
        "seconds_per_image": seconds / len(image_rows), "batch_size": batch_size,
        "results": str(out_dir / "results.json"), "pictures": str(vis_dir) if draw else None,
    }
    if coco is not None:
        from dettool.evaluation.coco_eval import detection_metrics

        evaluated = sorted(ids[row["file_name"]] for row in image_rows if row["file_name"] in ids)
        if len(evaluated) < len(image_rows):
            warn(f"{len(image_rows) - len(evaluated)} of {len(image_rows)} images are not in {ann_file}: their "
                 f"results have new ids and are left out of the metrics")
        known = set(evaluated)
        metrics = detection_metrics(coco, [r for r in results if r["image_id"] in known],
                                    proposals_only=detector.proposals_only, image_ids=evaluated)
        summary["ann_file"] = str(ann_file)
        summary["num_evaluated"] = len(evaluated)
        summary["metrics"] = {k: v for k, v in metrics.items() if not k.startswith("_")}
    write_text(json.dumps(summary, indent=2, ensure_ascii=False), out_dir / "summary.json")
    table = summary_table(summary)
    write_text(table + "\n", out_dir / "summary.md")
    print(table)
    print(f"dettool: wrote {out_dir / 'results.json'}, {out_dir / 'images.json'}, {out_dir / 'summary.json'}"
          + (f" and the pictures in {vis_dir}" if draw else ""))
    return summary
