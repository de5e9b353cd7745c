"""Pictures: loss curves from the JSONL log, PR curves, detections drawn on images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from torchvision.ops import box_convert

from dettool.data.coco import load_image

_PALETTE = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (145, 30, 180), (70, 240, 240),
            (240, 50, 230), (210, 245, 60), (0, 128, 128), (170, 110, 40)]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_log(log_path: str | Path, out_path: str | Path) -> Path | None:
    """Loss terms against iteration, and val bbox AP against epoch, from ``log.jsonl``."""
    log_path = Path(log_path)
    if not log_path.is_file():
        return None
    train, val = [], []
    for line in log_path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        (train if rec.get("mode") == "train" else val if rec.get("mode") == "val" else []).append(rec)
    if not train:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2 if val else 1, figsize=(11 if val else 6, 4), squeeze=False)
    ax = axes[0, 0]
    keys = sorted({k for r in train for k in r if k.startswith("loss")})
    for k in keys:
        pts = [(r["iter"], r[k]) for r in train if k in r]
        ax.plot(*zip(*pts), label=k, linewidth=1.5 if k == "loss" else 1.0)
    _style(ax, xlabel="iteration", ylabel="loss", yscale="log")
    if val:
        ax = axes[0, 1]
        for k in ("bbox_AP", "bbox_AP50", "bbox_AP75", "segm_AP", "AR@100", "AR@1000"):
            pts = [(r["epoch"], r[k]) for r in val if k in r]
            if pts:
                ax.plot(*zip(*pts), marker="o", label=k)
        _style(ax, xlabel="epoch", ylabel="val", ylim=(0, 1))
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def _style(ax, *, title: str = "", legend_size: float | None = None, **props) -> None:
    """Axis labels, scales and limits (``set_<name>`` for each keyword), a legend and a light grid."""
    if title:
        ax.set_title(title)
    for name, value in props.items():
        setter = getattr(ax, f"set_{name}")
        if isinstance(value, tuple):
            setter(*value)
        else:
            setter(value)
    ax.legend(fontsize=legend_size)
    ax.grid(alpha=0.3)


def plot_pr_curves(precision: np.ndarray, names: list[str], out_path: str | Path) -> Path:
    """Per-class precision-recall at IoU 0.5 and 0.75 from COCOeval's ``precision`` ``[T, R, K, A, M]``."""
    plt = _pyplot()
    recall = np.linspace(0, 1, precision.shape[1])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, t, title in ((axes[0], 0, "IoU 0.50"), (axes[1], 5, "IoU 0.75")):
        for k, name in enumerate(names):
            p = precision[t, :, k, 0, -1]
            ax.plot(recall, np.where(p < 0, np.nan, p), label=name)
        _style(ax, title=title, xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), legend_size=8)
    fig.tight_layout()
    out_path = Path(out_path)
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
    return out_path


def draw_detections(image: Image.Image, boxes: np.ndarray, scores: np.ndarray, labels: np.ndarray,
                    names: list[str], score_thr: float = 0.3, masks: np.ndarray | None = None) -> Image.Image:
    """Copy of ``image`` with boxes ``[K, 4]`` xyxy scoring >= ``score_thr`` drawn and labelled
    (and their bool ``masks [K, H, W]`` tinted in the box colour)."""
    out = image.convert("RGB").copy()
    if masks is not None:
        pixels = np.asarray(out, dtype=np.float32).copy()
        for mask, score, label in zip(masks, scores, labels):
            if score >= score_thr:
                pixels[mask] = 0.5 * pixels[mask] + 0.5 * np.array(_PALETTE[int(label) % len(_PALETTE)], np.float32)
        out = Image.fromarray(pixels.astype(np.uint8))
    draw = ImageDraw.Draw(out)
    for box, score, label in zip(boxes, scores, labels):
        if score < score_thr:
            continue
        color = _PALETTE[int(label) % len(_PALETTE)]
        x1, y1, x2, y2 = [float(v) for v in box]
        draw.rectangle([x1, y1, x2, y2], outline=color, width=2)
        text = f"{names[int(label)]} {score:.2f}"
        tw = draw.textlength(text)
        draw.rectangle([x1, max(0, y1 - 11), x1 + tw + 4, max(0, y1 - 11) + 11], fill=color)
        draw.text((x1 + 2, max(0, y1 - 11)), text, fill=(255, 255, 255))
    return out


def draw_results(dataset, results: list[dict], show_dir: Path, num_show: int) -> None:
    """Draw COCO-format ``results`` on the first ``num_show`` images of ``dataset`` into ``show_dir``."""
    show_dir.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list[dict]] = {}
    for r in results:
        by_image.setdefault(r["image_id"], []).append(r)
    for image_id in dataset.image_ids[:num_show]:
        info = dataset.coco.imgs[image_id]
        dets = by_image.get(image_id, [])
        boxes = box_convert(torch.tensor([d["bbox"] for d in dets], dtype=torch.float64).reshape(-1, 4), "xywh", "xyxy")
        img = draw_detections(load_image(dataset.img_dir / info["file_name"]), boxes, [d["score"] for d in dets],
                              [dataset.cat_id_to_label[d["category_id"]] for d in dets], dataset.class_names)
        img.save(show_dir / f"{Path(info['file_name']).stem}.png")
    print(f"dettool: drew detections on {min(num_show, len(dataset))} images in {show_dir}")
