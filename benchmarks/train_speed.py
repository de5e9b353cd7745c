"""Training-step time: dettool RetinaNet R-50-FPN against torchvision's retinanet_resnet50_fpn.

Both detectors are built from scratch with the same norm (FrozenBN in the backbone, stage 1
frozen), the same padded image size, the same batch and the same random boxes, and are timed in
one run on this machine: forward + loss + backward + SGD step, after warm-up, median of N.
torchvision's internal transform is set to keep the image size (no resize), so both see the
same pixels. Prints both times and the ratio dettool / torchvision (goal: <= 1.0).

    python benchmarks/train_speed.py --size 512 --batch 2 --iters 5
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
from torchvision.models import resnet50
from torchvision.models.detection import RetinaNet
from torchvision.models.detection.backbone_utils import _resnet_fpn_extractor
from torchvision.ops import FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from dettool.config import load_config
from dettool.trainer.builder import build_model


def random_targets(batch: int, size: int, num_classes: int, gen: torch.Generator) -> list[dict]:
    out = []
    for _ in range(batch):
        xy = torch.rand(6, 2, generator=gen) * size * 0.7
        wh = 16 + torch.rand(6, 2, generator=gen) * size * 0.3
        out.append({"boxes": torch.cat([xy, (xy + wh).clamp(max=size - 1)], 1),
                    "labels": torch.randint(0, num_classes, (6,), generator=gen)})
    return out


def sgd_step(model: torch.nn.Module, compute_loss):
    """A training step closure: ``compute_loss()`` -> dict of loss terms (``acc*`` entries are metrics, skipped)."""
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1e-4, momentum=0.9)

    def step() -> None:
        loss = sum(v for k, v in compute_loss().items() if not k.startswith("acc"))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def compare(step_ours, step_theirs, iters: int, warmup: int) -> None:
    """Time both interleaved (machine-load drift hits both alike); print medians and the ratio."""
    t_ours, t_theirs = [], []
    for _ in range(2):
        t_ours += time_steps(step_ours, iters // 2 + 1, warmup)
        t_theirs += time_steps(step_theirs, iters // 2 + 1, warmup)
    m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
    print(f"dettool      : {m_ours * 1000:8.1f} ms/step (median of {len(t_ours)})")
    print(f"torchvision  : {m_theirs * 1000:8.1f} ms/step (median of {len(t_theirs)})")
    print(f"ratio dettool / torchvision = {m_ours / m_theirs:.3f}  (goal <= 1.0)")


def time_steps(step, iters: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512, help="square padded image size (pixels)")
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    # Both models alike: after one SGD step from scratch some activations and gradients are
    # denormal floats, which x86 computes ~3x slower (measured on dettool's R-50 Faster R-CNN).
    torch.set_flush_denormal(True)
    num_classes = 80
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(args.batch, 3, args.size, args.size)
    targets = random_targets(args.batch, args.size, num_classes, gen)

    cfg = load_config("configs/retinanet_r50_fpn_1x_coco.yaml", ["model.backbone.norm=frozen_bn"])
    ours = build_model(cfg).train()
    metas = [{"img_shape": (args.size, args.size), "pad_shape": (args.size, args.size),
              "ori_shape": (args.size, args.size), "scale_factor": (1.0, 1.0)} for _ in range(args.batch)]
    step_ours = sgd_step(ours, lambda: ours.loss(images, targets, metas))

    body = _resnet_fpn_extractor(resnet50(norm_layer=FrozenBatchNorm2d), trainable_layers=3,
                                 returned_layers=[2, 3, 4], extra_blocks=LastLevelP6P7(2048, 256))
    theirs = RetinaNet(body, num_classes=num_classes + 1, min_size=args.size, max_size=args.size,
                       image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0]).train()
    tv_images = list(images)
    tv_targets = [{"boxes": t["boxes"], "labels": t["labels"] + 1} for t in targets]
    step_theirs = sgd_step(theirs, lambda: theirs(tv_images, tv_targets))

    print(f"RetinaNet R-50-FPN training step, {args.batch} x 3 x {args.size} x {args.size}, FrozenBN, "
          f"{torch.get_num_threads()} threads, {args.iters} timed steps after {args.warmup} warm-up")
    compare(step_ours, step_theirs, args.iters, args.warmup)


if __name__ == "__main__":
    main()
