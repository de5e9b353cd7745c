"""Backward pass, gradient clipping and the optimizer step, guarded against NaN / inf losses."""
from __future__ import annotations

import math

import torch
import torch.distributed as dist

from dettool.errors import TrainingDiverged
from dettool.trainer.hooks.base import Hook


class OptimizerHook(Hook):
    """After each iteration: check the loss is finite, backward through the AMP scaler, clip, step.

    Args:
        grad_clip: max total gradient L2 norm; None disables clipping.
    """

    def __init__(self, grad_clip: float | None = None) -> None:
        self.grad_clip = grad_clip

    def after_train_iter(self, runner) -> None:
        losses = runner.outputs
        total = sum(v for k, v in losses.items() if k.startswith("loss_"))
        finite = torch.isfinite(total.detach()).float()
        if dist.is_available() and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)  # every rank stops together
        if finite.item() < 1:
            terms = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in losses.items())
            last = runner.last_checkpoint or "none written yet"
            raise TrainingDiverged(f"loss is not finite at epoch {runner.epoch + 1}, iteration {runner.iter + 1} "
                                   f"({terms}); training stopped; last good checkpoint: {last}")
        runner.optimizer.zero_grad(set_to_none=True)
        runner.scaler.scale(total).backward()
        if self.grad_clip:
            runner.scaler.unscale_(runner.optimizer)
            params = [p for g in runner.optimizer.param_groups for p in g["params"] if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(params, self.grad_clip)
            runner.log_vars["grad_norm"] = float(norm) if math.isfinite(float(norm)) else float("nan")
        runner.scaler.step(runner.optimizer)
        runner.scaler.update()
