"""Training-step time: dettool Faster / Mask R-CNN R-50-FPN against torchvision's
``fasterrcnn_resnet50_fpn`` / ``maskrcnn_resnet50_fpn``.

Both are built from scratch with the same norm (FrozenBN, stage 1 frozen), the same padded
image size, batch and random boxes (and masks), and timed in one run on this machine:
forward + loss + backward + SGD step, after warm-up, median of N, the two interleaved.
torchvision's transform keeps the image size (no resize). Prints each time and the ratio
dettool / torchvision (goal: <= 1.0).

    python benchmarks/two_stage_train_speed.py --model faster --size 512 --batch 2 --iters 4
"""
from __future__ import annotations

import argparse

import torch
from torchvision.models import resnet50
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from train_speed import compare, random_targets, sgd_step

from dettool.config import load_config
from dettool.trainer.builder import build_model


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", choices=["faster", "mask"], default="faster")
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.manual_seed(0)
    # Both models alike: after one SGD step from scratch some activations and gradients are
    # denormal floats, which x86 computes ~3x slower (measured on dettool's R-50 Faster R-CNN).
    torch.set_flush_denormal(True)
    num_classes = 80
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size)
    targets = random_targets(args.batch, args.size, num_classes, gen)
    for t in targets:
        masks = torch.zeros((t["boxes"].shape[0], args.size, args.size), dtype=torch.uint8)
        for i, (x1, y1, x2, y2) in enumerate(t["boxes"].round().int().tolist()):
            masks[i, y1:y2, x1:x2] = 1
        t["masks"] = masks

    name = "mask_rcnn_r50_fpn_1x_coco" if args.model == "mask" else "faster_rcnn_r50_fpn_1x_coco"
    cfg = load_config(f"configs/{name}.yaml", ["model.backbone.norm=frozen_bn"])
    ours = build_model(cfg).train()
    metas = [{"img_shape": (args.size, args.size), "pad_shape": (args.size, args.size),
              "ori_shape": (args.size, args.size), "scale_factor": (1.0, 1.0)} for _ in range(args.batch)]
    our_targets = [{k: v for k, v in t.items() if args.model == "mask" or k != "masks"} for t in targets]
    step_ours = sgd_step(ours, lambda: ours.loss(images, our_targets, metas))

    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3)
    cls = MaskRCNN if args.model == "mask" else FasterRCNN
    theirs = cls(body, num_classes=num_classes + 1, min_size=args.size, max_size=args.size,
                 image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0]).train()
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1,
                   **({"masks": t["masks"]} if args.model == "mask" else {})}
                  for t in targets]
    tv_images = list(images)
    step_theirs = sgd_step(theirs, lambda: theirs(tv_images, tv_targets))

    print(f"{cls.__name__} R-50-FPN training step, {args.batch} x 3 x {args.size} x {args.size}, FrozenBN, "
          f"{torch.get_num_threads()} threads")
    compare(step_ours, step_theirs, args.iters, args.warmup)


if __name__ == "__main__":
    main()
