"""``dettool eval``: COCO metrics of a checkpoint on the config's val split, plus pictures."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from dettool.config.schema import Config, RPNConfig
from dettool.evaluation.coco_eval import detection_metrics, format_table, inference, per_class_ap
from dettool.trainer import builder
from dettool.trainer.checkpoint import load_checkpoint, load_model_weights
from dettool.visualization import draw_results, plot_pr_curves


def load_trained_model(cfg: Config, ckpt_path: str | Path, device: torch.device) -> torch.nn.Module:
    """Build the config's model and load a checkpoint into it (``weights_only=True``)."""
    ckpt = load_checkpoint(ckpt_path)
    model = builder.build_model(cfg)
    load_model_weights(model, ckpt, ckpt_path)
    return model.to(device).eval()


def evaluate_checkpoint(cfg: Config, ckpt_path: str | Path, out: str | Path | None = None,
                        show_dir: str | Path | None = None, num_show: int = 20, device: str | None = None,
                        batch_size: int = 2) -> dict:
    """Metrics dict (``bbox_AP`` ... in [0, 1], and ``per_class_AP``); writes JSON, a table and a PR plot.

    ``batch_size``: images per forward pass. Each batch is zero-padded to its largest image, and
    the padding reaches the features near an image's border, so the detections (and the AP) move
    a little with the batch size; batch 1 depends on nothing but the image."""
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = load_trained_model(cfg, ckpt_path, dev)
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=batch_size)
    results = inference(model, loader, dataset.cat_ids, dev)
    metrics = detection_metrics(dataset.coco, results, proposals_only=isinstance(cfg.model, RPNConfig))
    precision = metrics.pop("_precision", None)
    per_class = per_class_ap(precision, dataset.eval_class_names) if precision is not None else {}
    table = format_table(metrics, per_class)
    print(table)
    report = dict(metrics, per_class_AP=per_class, checkpoint=str(ckpt_path), num_images=len(dataset))
    if out:
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2))
        out.with_suffix(".md").write_text(table + "\n")
        if precision is not None:
            plot_pr_curves(precision, dataset.eval_class_names, out.with_name(out.stem + "_pr.png"))
        print(f"dettool: wrote {out}, {out.with_suffix('.md')} and the PR curves beside them")
    if show_dir:
        draw_results(dataset, results, Path(show_dir), num_show)
    return report
