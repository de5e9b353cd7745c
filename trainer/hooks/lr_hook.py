"""Learning-rate schedule: linear warm-up, then step (1x = 12 epochs, steps 8/11) or cosine."""
from __future__ import annotations

import math

from dettool.trainer.hooks.base import Hook


class LrScheduleHook(Hook):
    """Sets every param group's lr before each iteration from (epoch, iteration).

    The schedule is a pure function of the progress counters, so restoring the runner's
    ``epoch`` / ``iter`` on resume restores it exactly; ``state_dict`` records it for the
    checkpoint all the same.

    Args:
        policy: 'step' (multiply by ``gamma`` at each epoch in ``steps``) or 'cosine'.
        steps: epochs at which the step policy decays.
        gamma: decay factor.
        min_lr_ratio: cosine floor as a fraction of the base lr.
        warmup: 'linear', 'constant' or 'none'.
        warmup_iters: iterations of warm-up.
        warmup_ratio: lr factor at iteration 0 of the warm-up.
    """

    def __init__(self, policy: str = "step", steps: tuple[int, ...] = (8, 11), gamma: float = 0.1,
                 min_lr_ratio: float = 0.01, warmup: str = "linear", warmup_iters: int = 500,
                 warmup_ratio: float = 0.001) -> None:
        self.policy, self.steps, self.gamma, self.min_lr_ratio = policy, tuple(steps), gamma, min_lr_ratio
        self.warmup, self.warmup_iters, self.warmup_ratio = warmup, warmup_iters, warmup_ratio
        self.base_lrs: list[float] = []
        self.last_factor = 1.0

    def factor(self, epoch: int, it: int, total_iters: int) -> float:
        """Multiplier of the base lr at global iteration ``it`` in epoch ``epoch``."""
        if self.policy == "step":
            f = self.gamma ** sum(epoch >= s for s in self.steps)
        else:
            progress = min(it / max(total_iters, 1), 1.0)
            f = self.min_lr_ratio + (1 - self.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if self.warmup == "linear" and it < self.warmup_iters:
            k = (1 - it / self.warmup_iters) * (1 - self.warmup_ratio)
            f *= 1 - k
        elif self.warmup == "constant" and it < self.warmup_iters:
            f *= self.warmup_ratio
        return f

    def before_run(self, runner) -> None:
        self.base_lrs = [g.setdefault("initial_lr", g["lr"]) for g in runner.optimizer.param_groups]
        runner.lr_schedule = self

    def before_train_iter(self, runner) -> None:
        self.last_factor = self.factor(runner.epoch, runner.iter, runner.total_iters)
        for group, base in zip(runner.optimizer.param_groups, self.base_lrs):
            group["lr"] = base * self.last_factor

    def state_dict(self) -> dict:
        return {"policy": self.policy, "base_lrs": list(self.base_lrs), "last_factor": self.last_factor}

    def load_state_dict(self, state: dict) -> None:
        self.base_lrs = list(state["base_lrs"])
        self.last_factor = float(state["last_factor"])
