"""Training config -> the hook list: the built-in hooks it implies, then ``train.custom_hooks``.

A custom hook is a built-in name (``BUILTIN_HOOKS``) or ``package.module:ClassName`` (imported,
never evaluated). A built-in hook that the config already runs cannot be named again: a second
optimizer hook would step twice, a second checkpoint hook write twice.
"""
from __future__ import annotations

import importlib

from dettool.config import schema as S
from dettool.errors import ConfigError
from dettool.trainer.hooks import (
    BUILTIN_HOOKS,
    CheckpointHook,
    Hook,
    LoggerHook,
    LrScheduleHook,
    MixedPrecisionHook,
    OptimizerHook,
)

# Where each always-present built-in hook is configured, for the duplicate-hook message.
_CONFIGURED_BY = {"lr_schedule": "train.lr", "optimizer": "train.optimizer",
                  "checkpoint": "train.checkpoint_interval / checkpoint_iter_interval / keep_last",
                  "logger": "train.log_interval",
                  "mixed_precision": "train.amp"}


def import_hook(spec: S.HookConfig, index: int) -> type:
    """Resolve a user hook ``package.module:ClassName`` (imported, never evaluated)."""
    if ":" not in spec.type:
        raise ConfigError(f"train.custom_hooks[{index}].type: {spec.type!r} is neither a built-in hook "
                          f"({', '.join(BUILTIN_HOOKS)}) nor 'package.module:ClassName'")
    module_name, cls_name = spec.type.split(":", 1)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"train.custom_hooks[{index}].type: cannot import {module_name!r} ({exc})") from None
    cls = getattr(module, cls_name, None)
    if cls is None:
        raise ConfigError(f"train.custom_hooks[{index}].type: {module_name!r} has no {cls_name!r}")
    return cls


def build_hooks(cfg: S.TrainConfig) -> list[Hook]:
    """The built-in hooks of ``train`` (mixed precision when ``amp`` is set, lr schedule,
    optimizer, checkpoint, logger), then the custom hooks in their listed order."""
    lr = cfg.lr
    hooks: dict[str, Hook] = {}
    if cfg.amp != "none":
        hooks["mixed_precision"] = MixedPrecisionHook(cfg.amp)
    hooks["lr_schedule"] = LrScheduleHook(
        policy=lr.policy, steps=lr.steps, gamma=lr.gamma, min_lr_ratio=lr.min_lr_ratio, warmup=lr.warmup,
        warmup_iters=lr.warmup_iters, warmup_ratio=lr.warmup_ratio)
    hooks["optimizer"] = OptimizerHook(grad_clip=cfg.optimizer.grad_clip)
    hooks["checkpoint"] = CheckpointHook(interval=cfg.checkpoint_interval, keep_last=cfg.keep_last,
                                         iter_interval=cfg.checkpoint_iter_interval)
    hooks["logger"] = LoggerHook(interval=cfg.log_interval)
    out = list(hooks.values())
    for i, spec in enumerate(cfg.custom_hooks):
        if spec.type in hooks:
            raise ConfigError(f"train.custom_hooks[{i}].type: {spec.type!r} runs already (configured by "
                              f"{_CONFIGURED_BY[spec.type]}); a second one would run its stages twice")
        cls = BUILTIN_HOOKS.get(spec.type) or import_hook(spec, i)
        try:
            out.append(cls(**spec.args))
        except TypeError as exc:
            raise ConfigError(f"train.custom_hooks[{i}].args: {exc}") from None
        if spec.type in BUILTIN_HOOKS:
            hooks[spec.type] = out[-1]
    return out
