"""Tiny configs and random detectors for the runtime tests (imported by conftest.py and tests)."""
from __future__ import annotations

from pathlib import Path

import torch

from dettool.trainer import builder

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
MASK_RCNN = CONFIGS / "mask_rcnn_r18_fpn_synth.yaml"
FASTER_RCNN = CONFIGS / "faster_rcnn_r18_fpn_synth.yaml"


def tiny_sets(root: Path, *extra: str) -> list[str]:
    """Overrides that point a shipped synth config at the tiny dataset, at a 128x96 test scale."""
    return [f"data.train.ann_file={root / 'annotations/train.json'}", f"data.train.img_dir={root / 'train'}",
            f"data.val.ann_file={root / 'annotations/val.json'}", f"data.val.img_dir={root / 'val'}",
            "data.synth=null", "data.num_workers=0", "data.test_scale=128x96", "test.score_thr=0.01",
            "model.rpn_head.test_proposals.max_per_img=200", *extra]


def random_detector(cfg, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised detector whose heads give spread-out scores (not the near-constant prior)."""
    torch.manual_seed(seed)
    model = builder.build_model(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(k in name for k in ("cls", "reg", "centerness", "fc_", "conv_logits")):
                p.normal_(0.0, 0.05)
    return model
