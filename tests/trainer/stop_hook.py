"""A hook that stops training with an exception before a given iteration (a kill, in-process);
named in test configs as ``stop_hook:StopBefore``."""
from __future__ import annotations

from dettool.trainer.hooks import Hook


class Killed(RuntimeError):
    """Raised in place of a SIGKILL."""


class StopBefore(Hook):
    """Raise ``Killed`` in ``before_train_iter`` once ``iteration`` iterations are done."""

    def __init__(self, iteration: int) -> None:
        self.iteration = iteration

    def before_train_iter(self, runner) -> None:
        if runner.iter == self.iteration:
            raise Killed(f"stopped before iteration {self.iteration + 1}")
