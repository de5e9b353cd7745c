"""Training-step time of dettool's Faster R-CNN R-50-FPN against torchvision's, on one batch.

Part ``train`` of tests/gpu/check_gpu.py. dettool's model is built from
configs/faster_rcnn_r50_fpn_1x_coco.yaml by dettool's builder with ``model.backbone.weights=null``
(the shipped value: nothing is read or downloaded); torchvision's is
``fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None)``, which without weights trains
every backbone stage with ordinary BatchNorm, so dettool's is set the same way
(``frozen_stages=-1``, ``norm=bn``, ``norm_eval=false``). Both take the same batch (random
pixels, a few boxes per image; torchvision's transform told ``min_size`` / ``max_size`` equal to
the image, so it neither resizes nor pads more than dettool's 32-pixel padding) and the same
step: losses, ``GradScaler``-scaled backward, SGD (momentum 0.9, weight decay 1e-4, lr 0.0025:
the config's 0.02 for 16 images scaled to 2).

Each precision is a row: float32, then autocast float16 with a GradScaler on CUDA (bfloat16
without a scaler on the CPU, as dettool's ``MixedPrecisionHook``). A row passes when every
loss of every iteration is finite and, on CUDA, dettool's ms/iter is at most ``MAX_RATIO``
times torchvision's (a regression alarm, not a target). Remaining differences, by design of the
two libraries: torchvision's RPN keeps 2000 training proposals per image against dettool's
1000, and its RoI box loss is smooth L1 against the config's L1.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from dettool.config import load_config
from dettool.trainer import builder

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "faster_rcnn_r50_fpn_1x_coco.yaml"
LR = 0.0025
MAX_RATIO = 3.0
# torchvision's random-init setup: every stage trained, BatchNorm in train mode; no weights file.
OVERRIDES = ["model.backbone.weights=null", "model.backbone.frozen_stages=-1", "model.backbone.norm=bn",
             "model.backbone.norm_eval=false", f"train.optimizer.lr={LR}"]


@dataclass
class Batch:
    """One training batch in both libraries' forms.

    Attributes:
        pixels: ``[B, 3, H, W]`` in [0, 1] (torchvision normalises inside its model).
        images: ``[B, 3, H', W']`` dettool's input: normalised, zero-padded to a multiple of 32.
        targets: per image ``boxes`` ``Tensor[N, 4]`` xyxy pixels and ``labels`` ``Tensor[N]`` in [1, 80).
        metas: dettool's per-image ``img_shape`` / ``pad_shape``.
    """

    pixels: torch.Tensor
    images: torch.Tensor
    targets: list[dict]
    metas: list[dict]


def make_batch(cfg, num_images: int, height: int, width: int, boxes_per_image: int, device: torch.device,
               seed: int = 0) -> Batch:
    g = torch.Generator().manual_seed(seed)
    pixels = torch.rand(num_images, 3, height, width, generator=g)
    mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
    std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)
    div = cfg.data.size_divisor
    pad_h, pad_w = math.ceil(height / div) * div, math.ceil(width / div) * div
    images = F.pad((pixels * 255 - mean) / std, (0, pad_w - width, 0, pad_h - height))
    targets = []
    for _ in range(num_images):
        xy = torch.rand(boxes_per_image, 2, generator=g) * torch.tensor([width * 0.7, height * 0.7])
        wh = (0.05 + 0.25 * torch.rand(boxes_per_image, 2, generator=g)) * torch.tensor([width, height])
        targets.append({"boxes": torch.cat([xy, xy + wh], 1).to(device),
                        "labels": torch.randint(1, 80, (boxes_per_image,), generator=g).to(device)})
    metas = [{"img_shape": (height, width), "pad_shape": (pad_h, pad_w)} for _ in range(num_images)]
    return Batch(pixels.to(device), images.to(device), targets, metas)


def dettool_model(device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    cfg = load_config(CONFIG, OVERRIDES)
    torch.manual_seed(0)
    model = builder.build_model(cfg).to(device).train()
    return model, builder.build_optimizer(cfg.train.optimizer, model)


def torchvision_model(height: int, width: int, device: torch.device) -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    from torchvision.models.detection import fasterrcnn_resnet50_fpn

    torch.manual_seed(0)
    model = fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, min_size=height, max_size=width)
    model = model.to(device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    return model, torch.optim.SGD(params, lr=LR, momentum=0.9, weight_decay=1e-4)


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    if precision == "fp32":
        return None
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def time_steps(losses_fn, optimizer, device: torch.device, dtype: torch.dtype | None, warmup: int,
               iters: int) -> tuple[float, list[float], int]:
    """``warmup`` untimed then ``iters`` timed training steps: (ms per step, total loss per step,
    steps the GradScaler skipped on non-finite gradients)."""
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    totals: list[torch.Tensor] = []

    def step() -> None:
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            losses = losses_fn()
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        scaler.step(optimizer)
        scaler.update()
        totals.append(total.detach())

    for _ in range(warmup):
        step()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        step()
    sync(device)
    ms = 1e3 * (time.perf_counter() - start) / iters
    # the scale starts at 2**16, halves on each skipped step and grows only every 2000 steps
    skipped = round(math.log2(2.0**16 / scaler.get_scale())) if scaler.is_enabled() else 0
    return ms, [float(t) for t in totals], skipped


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_model(name: str, batch: Batch, device: torch.device, dtype: torch.dtype | None, warmup: int,
               iters: int) -> tuple[float, list[float], int]:
    """``time_steps`` of a fresh ``dettool`` or ``torchvision`` model on ``batch``."""
    if name == "dettool":
        model, optimizer = dettool_model(device)
        return time_steps(lambda: model.loss(batch.images, batch.targets, batch.metas), optimizer, device, dtype,
                          warmup, iters)
    height, width = batch.pixels.shape[-2:]
    model, optimizer = torchvision_model(height, width, device)
    return time_steps(lambda: model(list(batch.pixels), batch.targets), optimizer, device, dtype, warmup, iters)


def compare_train_step(precision: str, device: torch.device, num_images: int, height: int, width: int,
                       warmup: int, iters: int) -> tuple[str, dict]:
    """Both models' ms/iter at ``precision``; AssertionError on a non-finite loss or ratio > MAX_RATIO."""
    cfg = load_config(CONFIG, OVERRIDES)
    batch = make_batch(cfg, num_images, height, width, boxes_per_image=5, device=device)
    dtype = autocast_dtype(precision, device)
    values: dict = {"batch": [num_images, 3, height, width], "autocast": str(dtype).removeprefix("torch."),
                    "warmup": warmup, "iters": iters}
    for name in ("dettool", "torchvision"):
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        ms, totals, skipped = time_model(name, batch, device, dtype, warmup, iters)
        values[name] = {"ms_per_iter": ms, "losses": totals, "scaler_skipped_steps": skipped,
                        "peak_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None}
    ratio = values["dettool"]["ms_per_iter"] / values["torchvision"]["ms_per_iter"]
    values["ratio"] = ratio
    detail = (f"dettool {values['dettool']['ms_per_iter']:.1f} ms/iter, torchvision "
              f"{values['torchvision']['ms_per_iter']:.1f} ms/iter, ratio {ratio:.2f}; loss "
              f"{values['dettool']['losses'][0]:.3g}->{values['dettool']['losses'][-1]:.3g} / "
              f"{values['torchvision']['losses'][0]:.3g}->{values['torchvision']['losses'][-1]:.3g}")
    if dtype == torch.float16:
        detail += (f"; GradScaler skipped {values['dettool']['scaler_skipped_steps']} / "
                   f"{values['torchvision']['scaler_skipped_steps']} of {warmup + iters} steps")
    if device.type == "cuda":
        detail += (f"; peak {values['dettool']['peak_mib'] / 1024:.1f} / "
                   f"{values['torchvision']['peak_mib'] / 1024:.1f} GiB")
    for name in ("dettool", "torchvision"):
        assert all(math.isfinite(t) for t in values[name]["losses"]), f"{name}: non-finite loss: {detail}"
    if device.type == "cuda":
        assert ratio <= MAX_RATIO, f"dettool over {MAX_RATIO}x torchvision's step time: {detail}"
    return detail, values


def train_checks(checker, device: torch.device, num_images: int, height: int, width: int, warmup: int, iters: int,
                 precisions: tuple[str, ...] = ("fp32", "amp")) -> None:
    """A row per precision: dettool vs torchvision Faster R-CNN R-50-FPN training step."""
    for precision in precisions:
        dtype = autocast_dtype(precision, device)
        tag = "fp32" if dtype is None else f"amp {str(dtype).removeprefix('torch.')}"
        checker.run(f"faster_rcnn_r50_fpn step {tag} {num_images}x{height}x{width}",
                    lambda: compare_train_step(precision, device, num_images, height, width, warmup, iters))
