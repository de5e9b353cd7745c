"""Built-in hooks, by the names a config's ``train.custom_hooks`` may also use."""

from dettool.trainer.hooks.amp_hook import MixedPrecisionHook
from dettool.trainer.hooks.base import STAGES, Hook
from dettool.trainer.hooks.checkpoint_hook import CheckpointHook
from dettool.trainer.hooks.logger_hook import LoggerHook
from dettool.trainer.hooks.lr_hook import LrScheduleHook
from dettool.trainer.hooks.optimizer_hook import OptimizerHook

BUILTIN_HOOKS = {"lr_schedule": LrScheduleHook, "optimizer": OptimizerHook, "checkpoint": CheckpointHook,
                 "logger": LoggerHook, "mixed_precision": MixedPrecisionHook}

__all__ = ["BUILTIN_HOOKS", "STAGES", "CheckpointHook", "Hook", "LoggerHook", "LrScheduleHook",
           "MixedPrecisionHook", "OptimizerHook"]
