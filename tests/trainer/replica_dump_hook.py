"""Test helper hook: every rank saves its model weights at the end of the run."""
from __future__ import annotations

from pathlib import Path

import torch

from dettool.trainer.hooks import Hook


class ReplicaDumpHook(Hook):
    """Writes ``work_dir/replica_rank{R}.pt`` (the model's parameters) at ``after_run``.

    Parameters only: DDP broadcasts BN buffers from rank 0 at the start of each forward, so the
    running statistics of the last forward are per-rank by design.
    """

    def after_run(self, runner) -> None:
        state = {k: v.detach().cpu().clone() for k, v in runner.model.named_parameters()}
        torch.save(state, Path(runner.work_dir) / f"replica_rank{runner.rank}.pt")
