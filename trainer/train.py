"""``dettool train``: build everything from the config and run the hook-driven loop."""
from __future__ import annotations

import dataclasses
import json
import os
import random
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

import dettool
from dettool.config.schema import Config, RPNConfig
from dettool.errors import CheckpointError, ConfigError
from dettool.evaluation.coco_eval import detection_metrics, format_table, inference
from dettool.trainer import builder
from dettool.trainer.checkpoint import load_checkpoint
from dettool.trainer.distributed import DistInfo, barrier, cleanup, init_distributed
from dettool.trainer.hooks.checkpoint_hook import checkpoint_files
from dettool.trainer.runner import LossWrapper, Runner


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def config_dict(cfg: Config) -> dict:
    """The resolved config as plain data (saved beside the checkpoints)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def resolve_resume(work_dir: Path, resume: str | None) -> Path | None:
    """``None`` -> fresh run; ``'auto'`` -> the newest checkpoint in ``work_dir``; else a path."""
    if resume is None:
        return None
    if resume != "auto":
        return Path(resume)
    pointer = work_dir / "last_checkpoint"
    if not pointer.is_file():
        raise CheckpointError(f"{work_dir}: nothing to resume (no last_checkpoint file)")
    return work_dir / pointer.read_text().strip()


def is_rpn(cfg: Config) -> bool:
    """An RPN alone is judged by proposal recall."""
    return isinstance(cfg.model, RPNConfig)


def make_evaluator(cfg: Config, dist_info: DistInfo):
    """``model -> metrics`` on the val split (rank 0 evaluates; other ranks wait)."""
    dataset = builder.build_dataset(cfg, "val")
    loader = builder.build_dataloader(cfg, dataset, train=False, batch_size=2)

    def evaluate(model: nn.Module) -> dict:
        metrics = {}
        if dist_info.is_main:
            results = inference(model, loader, dataset.cat_ids, dist_info.device)
            metrics = detection_metrics(dataset.coco, results, proposals_only=is_rpn(cfg))
            metrics = {k: v for k, v in metrics.items() if not k.startswith("_")}
        barrier()
        return metrics

    return evaluate


def train(cfg: Config, resume: str | None = None, device: str | None = None) -> dict:
    """Train ``cfg`` (under torchrun when launched so); returns the final val metrics on rank 0."""
    info = init_distributed(device)
    try:
        return _train(cfg, info, resume)
    finally:
        cleanup()


def prepare_work_dir(work_dir: Path) -> None:
    """Create ``work_dir`` (or check an existing one) and make sure it can be written to."""
    if work_dir.exists() and not work_dir.is_dir():
        raise ConfigError(f"work_dir: {work_dir} exists and is not a folder")
    try:
        work_dir.mkdir(parents=True, exist_ok=True)
        probe = work_dir / f".dettool_write_test_{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise ConfigError(f"work_dir: cannot write to {work_dir} ({exc.strerror or exc})") from None


def sync_batch_norm(model: nn.Module, cfg: Config, info: DistInfo) -> nn.Module:
    """``model`` with its BatchNorms synchronised across the processes: all of them with
    ``train.sync_bn`` (converted here), the backbone's with ``norm: syncbn`` (built so).

    PyTorch's ``nn.SyncBatchNorm`` synchronises CUDA tensors only: in training under a process
    group it raises ``ValueError: SyncBatchNorm expected input tensor to be on GPU or XPU or
    privateuseone`` for CPU tensors, gloo included (PyTorch 2.14; tests/trainer/test_sync_batch_norm.py
    checks it still does). A multi-process CPU run with either setting is refused before its first
    step; a single process needs no synchronisation (``nn.SyncBatchNorm`` then computes as BN).
    """
    key = ("train.sync_bn" if cfg.train.sync_bn else
           "model.backbone.norm" if any(isinstance(m, nn.SyncBatchNorm) for m in model.modules()) else None)
    if key is None or info.world_size == 1:
        return model
    if info.device.type != "cuda":
        fix = "false" if cfg.train.sync_bn else "bn"
        raise ConfigError(f"{key}: PyTorch's SyncBatchNorm synchronises CUDA tensors only (on CPU tensors it raises "
                          f"'SyncBatchNorm expected input tensor to be on GPU'); set {key}={fix} for this "
                          f"{info.world_size}-process CPU run")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model) if cfg.train.sync_bn else model


def _train(cfg: Config, info: DistInfo, resume: str | None) -> dict:
    work_dir = Path(cfg.work_dir)
    if info.is_main:
        prepare_work_dir(work_dir)
    ckpt_path = resolve_resume(work_dir, resume)
    earlier = [] if ckpt_path else sorted(p.name for p in checkpoint_files(work_dir))
    if earlier:
        raise ConfigError(f"work_dir: {work_dir} holds checkpoints of an earlier run ({', '.join(earlier[:3])}"
                          f"{', ...' if len(earlier) > 3 else ''}); continue it with --resume, or train into "
                          "another --work-dir (a fresh run would overwrite them)")
    ckpt = load_checkpoint(ckpt_path) if ckpt_path else None
    if info.is_main:
        builder.ensure_synthetic(cfg.data)
        (work_dir / "config.yaml").write_text(yaml.safe_dump(config_dict(cfg), sort_keys=False))
    barrier()
    seed_everything(cfg.train.seed)
    if info.device.type == "cpu":
        # Values below 1e-38 become 0: x86 computes denormal floats ~3x slower (R-50 from scratch).
        torch.set_flush_denormal(True)
    train_set = builder.build_dataset(cfg, "train")
    evaluate = make_evaluator(cfg, info) if cfg.train.eval_interval > 0 else None
    loader = builder.build_dataloader(cfg, train_set, train=True, rank=info.rank, world_size=info.world_size)
    model = builder.build_model(cfg).to(info.device)
    if cfg.train.channels_last:  # NHWC convs: ~25% faster training on x86 CPUs
        model = model.to(memory_format=torch.channels_last)
    model = sync_batch_norm(model, cfg, info)
    train_model: nn.Module = LossWrapper(model)
    if info.world_size > 1:
        train_model = nn.parallel.DistributedDataParallel(
            train_model, device_ids=[info.device.index] if info.device.type == "cuda" else None)
    optimizer = builder.build_optimizer(cfg.train.optimizer, model)
    meta = {"dettool_version": dettool.__version__, "class_names": train_set.class_names,
            "cat_ids": list(train_set.cat_ids), "config": config_dict(cfg)}
    runner = Runner(model=model, train_model=train_model, optimizer=optimizer, train_loader=loader,
                    hooks=builder.build_hooks(cfg.train), work_dir=work_dir, max_epochs=cfg.train.max_epochs,
                    max_iters=cfg.train.max_iters, evaluate=evaluate, eval_interval=cfg.train.eval_interval,
                    device=info.device, rank=info.rank, world_size=info.world_size, meta=meta,
                    channels_last=cfg.train.channels_last)
    runner.train(resume=(ckpt, str(ckpt_path)) if ckpt else None)
    metrics = runner.val_metrics
    if info.is_main and metrics:
        (work_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
        print(format_table(metrics))
        print(f"dettool: checkpoints, log.jsonl, loss_curve.png and metrics.json are in {work_dir}")
    return metrics
