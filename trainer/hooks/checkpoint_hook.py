"""Periodic checkpoints: atomic writes, the newest ``keep_last`` kept, a ``last_checkpoint`` pointer."""
from __future__ import annotations

import os
from pathlib import Path

from dettool.io import atomic_save
from dettool.trainer.hooks.base import Hook


class CheckpointHook(Hook):
    """Save ``epoch_N.pth`` every ``interval`` epochs (and at the end), keeping the newest ``keep_last``.

    Each checkpoint holds model, optimizer, lr schedule, AMP scaler, progress counters and RNG
    states (see ``Runner.state_dict``). ``work_dir/last_checkpoint`` names the newest file and is
    what ``--resume`` without a path reads.
    """

    def __init__(self, interval: int = 1, keep_last: int = 3) -> None:
        self.interval = max(1, interval)
        self.keep_last = keep_last

    def _save(self, runner, name: str) -> None:
        if runner.rank != 0:
            return
        work_dir = Path(runner.work_dir)
        path = work_dir / name
        atomic_save(runner.state_dict(), path)
        pointer = work_dir / "last_checkpoint"
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(name + "\n")
        os.replace(tmp, pointer)
        runner.last_checkpoint = str(path)
        if self.keep_last > 0:
            saved = sorted(work_dir.glob("epoch_*.pth"), key=lambda p: int(p.stem.split("_")[1]))
            for old in saved[: -self.keep_last]:
                if old != path:
                    old.unlink(missing_ok=True)

    def after_train_epoch(self, runner) -> None:
        done = runner.epoch + 1
        if runner.epoch_completed and (done % self.interval == 0 or done >= runner.max_epochs):
            self._save(runner, f"epoch_{done}.pth")

    def after_run(self, runner) -> None:
        if not runner.epoch_completed:  # stopped mid-epoch by max_iters: keep that state too
            self._save(runner, f"iter_{runner.iter}.pth")
