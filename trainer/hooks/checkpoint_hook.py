"""Periodic checkpoints: atomic writes, the newest ``keep_last`` kept, a ``last_checkpoint`` pointer."""
from __future__ import annotations

import os
import re
from pathlib import Path

from dettool.io import atomic_save
from dettool.trainer.hooks.base import Hook

_NAME = re.compile(r"^(epoch|iter)_(\d+)\.pth$")


def checkpoint_files(work_dir: Path) -> list[Path]:
    """The ``epoch_N.pth`` / ``iter_N.pth`` files in ``work_dir`` (any order; empty if it does not exist)."""
    if not work_dir.is_dir():
        return []
    return [p for p in work_dir.iterdir() if _NAME.match(p.name)]


class CheckpointHook(Hook):
    """Save ``epoch_N.pth`` every ``interval`` epochs (and at the end), ``iter_N.pth`` every
    ``iter_interval`` iterations inside an epoch (and when ``max_iters`` stops a run mid-epoch);
    keep the newest ``keep_last`` of them all (0 keeps every one).

    Each checkpoint holds model, optimizer, lr schedule, AMP scaler, progress counters and RNG
    states (see ``Runner.state_dict``); an ``iter_N.pth`` resumes at the next batch of its epoch.
    ``work_dir/last_checkpoint`` names the newest file and is what ``--resume`` without a path reads.
    """

    def __init__(self, interval: int = 1, keep_last: int = 3, iter_interval: int = 0) -> None:
        self.interval = max(1, interval)
        self.keep_last = keep_last
        self.iter_interval = iter_interval

    def _save(self, runner, name: str, mid_epoch: bool = False) -> None:
        if runner.rank != 0:
            return
        work_dir = Path(runner.work_dir)
        path = work_dir / name
        atomic_save(runner.state_dict(mid_epoch=mid_epoch), path)
        pointer = work_dir / "last_checkpoint"
        tmp = pointer.with_suffix(".tmp")
        tmp.write_text(name + "\n")
        os.replace(tmp, pointer)
        runner.last_checkpoint = str(path)
        if self.keep_last > 0:
            for old in self._saved(work_dir, len(runner.train_loader))[: -self.keep_last]:
                if old != path:
                    old.unlink(missing_ok=True)

    @staticmethod
    def _saved(work_dir: Path, iters_per_epoch: int) -> list[Path]:
        """The work dir's checkpoints, oldest first (by the training progress in their names)."""
        found = []
        for p in checkpoint_files(work_dir):
            kind, number = _NAME.match(p.name).groups()
            found.append((int(number) * iters_per_epoch if kind == "epoch" else int(number), kind == "epoch", p))
        return [p for _, _, p in sorted(found)]

    def after_train_iter(self, runner) -> None:
        done = runner.iter + 1
        end_of_epoch = runner.inner_iter + 1 >= len(runner.train_loader)
        if self.iter_interval and done % self.iter_interval == 0 and not end_of_epoch:
            self._save(runner, f"iter_{done}.pth", mid_epoch=True)

    def after_train_epoch(self, runner) -> None:
        done = runner.epoch + 1
        if runner.epoch_completed and (done % self.interval == 0 or done >= runner.max_epochs):
            self._save(runner, f"epoch_{done}.pth")

    def after_run(self, runner) -> None:
        name = f"iter_{runner.iter}.pth"
        if not runner.epoch_completed and runner.last_checkpoint != str(Path(runner.work_dir) / name):
            self._save(runner, name)  # stopped mid-epoch by max_iters: keep that state too
