"""Helpers shared by test folders: tiny configs on the tiny synthetic set, random detectors, the CLI.

``tests/`` is on ``sys.path`` (it holds the root conftest.py), so any test imports this module.
"""
from __future__ import annotations

import contextlib
import io
import sys
from pathlib import Path

import torch

from dettool.trainer import builder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def tiny_sets(root: Path, *extra: str) -> list[str]:
    """Overrides that point a shipped synth config at the tiny dataset ``root``, at a 128x96 test scale."""
    return [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth=null", "data.num_workers=0", "data.test_scale=128x96", "test.score_thr=0.01", *extra]


def random_detector(cfg, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised detector whose heads give spread-out scores (not the near-constant prior)."""
    torch.manual_seed(seed)
    model = builder.build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("cls", "reg", "centerness", "fc_", "conv_logits")):
                p.normal_(0.0, 0.05)
    return model


def run_cli(args: list) -> tuple[int, str, str]:
    """``dettool ARGS`` in-process through ``dettool.cli.main``: (exit status, stdout, stderr)."""
    from dettool.cli import main

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["dettool", *[str(a) for a in args]]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = argv
    return code, out.getvalue(), err.getvalue()


def empty_and_one_gt_losses(model: torch.nn.Module) -> tuple[dict, dict]:
    """A detector's losses on two 64 x 96 random images without ground truth, then with one box
    each (the mmdetection head-test pattern): ``(losses_empty, losses_one_gt)``."""
    images = torch.randn(2, 3, 64, 96)
    metas = [{"img_shape": (64, 96), "pad_shape": (64, 96)}] * 2
    empty = [{"boxes": torch.zeros((0, 4)), "labels": torch.zeros((0,), dtype=torch.long)}] * 2
    one = [{"boxes": torch.tensor([[10.0, 12.0, 50.0, 40.0]]), "labels": torch.tensor([1])}] * 2
    return model.loss(images, empty, metas), model.loss(images, one, metas)


TORCHVISION_ANCHORS = ("model.{head}.anchor.sizes=[[16,20,25],[32,40,50],[64,80,101],[128,161,203]]",
                      "model.{head}.anchor.round_base=true", "model.{head}.anchor.stride_from_input=true")
# torchvision's options (what `dettool convert torchvision` sets) on the synth models
TORCHVISION_OPTIONS = {
    "retinanet": [a.format(head="bbox_head") for a in TORCHVISION_ANCHORS],
    "fcos": ["model.bbox_head.point_offset=0.0", "model.bbox_head.stride_from_input=true",
             "model.bbox_head.test_score=sqrt_cls_centerness"],
    "mask_rcnn": [a.replace("[[16,20,25],[32,40,50],[64,80,101],[128,161,203]]",
                            "[[16],[32],[64],[128],[256]]").format(head="rpn_head") for a in TORCHVISION_ANCHORS]
    + ["model.rpn_head.num_convs=2", "model.roi_head.roi_extractor.aligned=false",
       "model.roi_head.mask_head.roi_extractor.aligned=false", "model.roi_head.bbox_head.num_shared_convs=2",
       "model.roi_head.bbox_head.norm=bn", "model.roi_head.mask_head.norm=bn", "test.min_bbox_size=0.5",
       "test.mask_paste=torchvision"],
}
