"""Progress bar with ETA, a JSONL log of losses / lr / speed / metrics, and a loss-curve plot."""
from __future__ import annotations

import json
import sys
import time
from collections import defaultdict
from pathlib import Path

from tqdm import tqdm

from dettool.trainer.hooks.base import Hook


class LoggerHook(Hook):
    """Rank 0 shows one progress bar over the whole run and appends to ``work_dir/log.jsonl``.

    Args:
        interval: iterations between JSONL records (losses averaged over the interval).
    """

    def __init__(self, interval: int = 20) -> None:
        self.interval = max(1, interval)
        self.sums: dict[str, float] = defaultdict(float)
        self.count = 0
        self.bar = None
        self.t_last = 0.0
        self.log_path: Path | None = None

    def _write(self, record: dict) -> None:
        with open(self.log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")

    def before_run(self, runner) -> None:
        if runner.rank != 0:
            return
        Path(runner.work_dir).mkdir(parents=True, exist_ok=True)
        self.log_path = Path(runner.work_dir) / "log.jsonl"
        tty = sys.stderr.isatty()
        self.bar = tqdm(total=runner.total_iters, initial=runner.iter, desc="train", unit="it", dynamic_ncols=True,
                        mininterval=0.5 if tty else 30.0, file=sys.stderr, smoothing=0.05)
        self.t_last = self.t_start = time.perf_counter()
        self._write({"mode": "start", "time": time.time(), "epoch": runner.epoch, "iter": runner.iter,
                     "total_iters": runner.total_iters, "world_size": runner.world_size})

    def after_train_iter(self, runner) -> None:
        if runner.rank != 0:
            return
        for k, v in runner.outputs.items():
            self.sums[k] += float(v.detach())
        for k, v in runner.log_vars.items():
            self.sums[k] += float(v)
        self.count += 1
        self.bar.update(1)
        if self.count % max(1, min(self.interval, 5)) == 0 or runner.iter + 1 == runner.total_iters:
            post = {k.replace("loss_", ""): f"{v / self.count:.3f}" for k,
                    v in self.sums.items() if k.startswith("loss_")}
            post["lr"] = f"{runner.optimizer.param_groups[0]['lr']:.2e}"
            post["ep"] = f"{runner.epoch + 1}/{runner.max_epochs}"
            self.bar.set_postfix(post, refresh=False)
        if self.count >= self.interval:
            self._flush(runner, runner.iter + 1)

    def _flush(self, runner, done_iters: int) -> None:
        """Write the losses averaged since the last record (``done_iters`` iterations completed)."""
        now = time.perf_counter()
        sec_per_iter = (now - self.t_last) / self.count
        record = {"mode": "train", "epoch": runner.epoch + 1, "iter": done_iters,
                  "lr": runner.optimizer.param_groups[0]["lr"], "sec_per_iter": round(sec_per_iter, 4),
                  "eta_s": round((runner.total_iters - done_iters) * sec_per_iter, 1)}
        record.update({k: round(v / self.count, 5) for k, v in self.sums.items()})
        record["loss"] = round(sum(v for k, v in record.items() if k.startswith("loss_")), 5)
        self._write(record)
        self.sums.clear()
        self.count = 0
        self.t_last = now

    def after_val_epoch(self, runner) -> None:
        if runner.rank != 0 or not runner.val_metrics:
            return
        self._write({"mode": "val", "epoch": runner.epoch + 1, "iter": runner.iter,
                     "elapsed_s": round(time.perf_counter() - self.t_start, 1), **runner.val_metrics})
        summary = " ".join(f"{k}={v:.3f}" for k, v in runner.val_metrics.items() if k in ("bbox_AP", "bbox_AP50",
                                                                                          "segm_AP", "AR@1000"))
        tqdm.write(f"epoch {runner.epoch + 1}: {summary}", file=sys.stderr)

    def after_run(self, runner) -> None:
        if runner.rank != 0:
            return
        self.bar.close()
        if self.count:  # the tail of a run shorter than (or not a multiple of) the interval
            self._flush(runner, runner.iter)
        self._write({"mode": "end", "time": time.time(), "epoch": runner.epoch, "iter": runner.iter,
                     "elapsed_s": round(time.perf_counter() - self.t_start, 1)})
        from dettool.visualization import plot_training_log

        plot_training_log(self.log_path, Path(runner.work_dir) / "loss_curve.png")
