"""Mixed precision: fp16 autocast with a GradScaler on CUDA, bf16 autocast on the CPU."""
from __future__ import annotations

import torch

from dettool.trainer.hooks.base import Hook


class MixedPrecisionHook(Hook):
    """Sets ``runner.autocast_dtype`` and ``runner.scaler`` before the run.

    Args:
        mode: 'fp16' or 'bf16'. On the CPU both run as bf16 (CPU autocast has no fp16 kernels
            for most convs); the loss scaler is only needed, and only enabled, for fp16 on CUDA.
    """

    def __init__(self, mode: str = "fp16") -> None:
        self.mode = mode

    def before_run(self, runner) -> None:
        on_cuda = runner.device.type == "cuda"
        use_fp16 = self.mode == "fp16" and on_cuda
        runner.autocast_dtype = torch.float16 if use_fp16 else torch.bfloat16
        runner.scaler = torch.amp.GradScaler("cuda", enabled=use_fp16)
