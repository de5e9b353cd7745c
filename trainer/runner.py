"""The minimal training loop. Everything besides iterating and calling hooks lives in hooks."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dettool.trainer.checkpoint import load_model_weights, rng_state, set_rng_state
from dettool.trainer.hooks.base import STAGES, Hook


class LossWrapper(nn.Module):
    """Routes the loss computation through ``forward`` so DistributedDataParallel syncs gradients."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.detector = detector

    def forward(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, torch.Tensor]:
        return self.detector.loss(images, targets, metas)


class Runner:
    """Iterates epochs and batches and calls the hooks at the pipeline's stages.

    Args:
        model: the detector (``loss`` / ``predict``).
        train_model: what computes the losses: ``LossWrapper(model)``, possibly inside DDP.
        optimizer: the optimizer (stepped by ``OptimizerHook``).
        train_loader: yields ``(images, targets, metas)``; its sampler has ``set_epoch``.
        hooks: called in list order at every stage.
        work_dir: where checkpoints and logs go.
        max_epochs: epochs to train.
        max_iters: optional cap on total iterations (stops early).
        evaluate: optional ``model -> metrics`` run every ``eval_interval`` epochs and at the end.
        device, rank, world_size: placement.
    """

    def __init__(self, model: nn.Module, train_model: nn.Module, optimizer: torch.optim.Optimizer,
                 train_loader, hooks: list[Hook], work_dir: str | Path, max_epochs: int,
                 max_iters: int | None = None, evaluate: Callable[[nn.Module], dict] | None = None,
                 eval_interval: int = 1, device: torch.device = torch.device("cpu"), rank: int = 0,
                 world_size: int = 1, meta: dict | None = None, channels_last: bool = False) -> None:
        self.model, self.train_model, self.optimizer = model, train_model, optimizer
        self.train_loader, self.hooks = train_loader, list(hooks)
        self.work_dir = Path(work_dir)
        self.max_epochs, self.max_iters = max_epochs, max_iters
        self.evaluate_fn, self.eval_interval = evaluate, max(1, eval_interval)
        self.device, self.rank, self.world_size = device, rank, world_size
        self.meta = dict(meta or {})
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
        self.epoch = 0  # completed epochs
        self.iter = 0  # completed iterations
        self.inner_iter = 0  # index of the current batch in its epoch
        self.resume_batches = 0  # batches of the current epoch done before a mid-epoch resume
        self.epoch_completed = True
        self.outputs: dict[str, torch.Tensor] = {}
        self.log_vars: dict[str, float] = {}
        self.val_metrics: dict[str, float] = {}
        self.autocast_dtype: torch.dtype | None = None
        self.scaler = torch.amp.GradScaler("cuda", enabled=False)
        self.lr_schedule = None
        self.last_checkpoint: str | None = None
        self.should_stop = False

    @property
    def total_iters(self) -> int:
        total = self.max_epochs * len(self.train_loader)
        return min(total, self.max_iters) if self.max_iters else total

    def _iters_reached(self) -> bool:
        return bool(self.max_iters) and self.iter >= self.max_iters

    def call_hook(self, stage: str) -> None:
        assert stage in STAGES, stage
        for hook in self.hooks:
            getattr(hook, stage)(self)

    def _autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def run_iter(self, batch) -> dict[str, torch.Tensor]:
        images, targets, metas = batch
        images = images.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)
        targets = [{k: v.to(self.device, non_blocking=True) for k, v in t.items()} for t in targets]
        with self._autocast():
            return self.train_model(images, targets, metas)

    def validate(self) -> None:
        self.call_hook("before_val_epoch")
        self.model.eval()
        self.val_metrics = self.evaluate_fn(self.model) if self.evaluate_fn else {}
        self.model.train()
        self.call_hook("after_val_epoch")

    def train(self, resume: tuple[dict, str] | None = None) -> None:
        """Run the loop; ``resume=(checkpoint, path)`` continues a saved run."""
        if resume is not None:
            self.epoch, self.iter = int(resume[0]["epoch"]), int(resume[0]["iter"])
        self.call_hook("before_run")
        if resume is not None:
            self.resume(*resume)  # after before_run: hooks have created the scaler and schedule
        while self.epoch < self.max_epochs and not self.should_stop and not self._iters_reached():
            # After a mid-epoch resume the sampler starts at the next batch: data order and
            # augmentation depend on (seed, epoch, index) only, so the rest of the epoch is as it was.
            skip, self.resume_batches = self.resume_batches, 0
            self.train_loader.sampler.set_epoch(self.epoch, skip=skip * self.train_loader.batch_size)
            self.train_model.train()
            self.epoch_completed = False
            self.call_hook("before_train_epoch")
            for self.inner_iter, batch in enumerate(self.train_loader, start=skip):
                self.log_vars = {}
                self.call_hook("before_train_iter")
                self.outputs = self.run_iter(batch)
                self.call_hook("after_train_iter")
                self.iter += 1
                if self._iters_reached():
                    break
            else:
                self.epoch_completed = True
            self.call_hook("after_train_epoch")
            last = self.epoch + 1 >= self.max_epochs or self._iters_reached()
            if self.evaluate_fn and ((self.epoch + 1) % self.eval_interval == 0 or last):
                self.validate()
            if self.epoch_completed:
                self.epoch += 1
        self.call_hook("after_run")

    # ------------------------------------------------------------------------------- state

    def state_dict(self, mid_epoch: bool = False) -> dict:
        """Everything a resumed run needs to continue as if never stopped.

        ``mid_epoch``: saved from ``after_train_iter``, once the current batch's step is done
        (the counters are advanced past it). Otherwise saved at an epoch's end, or after the loop
        stopped mid-epoch (``max_iters``).
        """
        if mid_epoch:
            epoch, iters, batches = self.epoch, self.iter + 1, self.inner_iter + 1
        elif self.epoch_completed:
            epoch, iters, batches = self.epoch + 1, self.iter, 0
        else:
            epoch, iters, batches = self.epoch, self.iter, self.inner_iter + 1
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_schedule": self.lr_schedule.state_dict() if self.lr_schedule else {},
                "scaler": self.scaler.state_dict(), "epoch": epoch, "iter": iters, "epoch_batches": batches,
                "rng": rng_state(), "meta": self.meta}

    def resume(self, ckpt: dict, path: str) -> None:
        """Restore model, optimizer, lr schedule, scaler, counters and RNG from ``ckpt`` (a
        mid-epoch checkpoint continues from the batch after its last one)."""
        load_model_weights(self.model, ckpt, path)
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.lr_schedule is not None and ckpt.get("lr_schedule"):
            self.lr_schedule.load_state_dict(ckpt["lr_schedule"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        self.epoch, self.iter = int(ckpt["epoch"]), int(ckpt["iter"])
        self.resume_batches = int(ckpt.get("epoch_batches", 0))
        set_rng_state(ckpt["rng"])
        self.last_checkpoint = str(path)
