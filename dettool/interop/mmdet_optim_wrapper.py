"""MMEngine's ``optim_wrapper`` settings besides the optimizer -> dettool's ``train`` section.

- ``type='AmpOptimWrapper'`` (MMDetection's ``*_amp-1x`` / ``fp16`` configs): ``train.amp: fp16``,
  or ``bf16`` with ``dtype='bfloat16'``. dettool's loss scale is dynamic (a ``GradScaler``), as
  MMEngine's default ``loss_scale='dynamic'``; a fixed or configured scale is listed as dropped.
- ``paramwise_cfg.norm_decay_mult`` (MMDetection's from-scratch configs: 0):
  ``train.optimizer.norm_decay_mult``; other ``paramwise_cfg`` keys are listed as dropped.

Training settings dettool has no equivalent for go into ``Translation.dropped``, as the other
training settings do (they are not part of the model, so they are never refused).
"""
from __future__ import annotations

from dettool.interop.mmdet_section import Translation

HANDLED = ("type", "loss_scale", "dtype", "paramwise_cfg")
AMP_DTYPES = {None: "fp16", "float16": "fp16", "bfloat16": "bf16"}


def optim_wrapper(t: Translation, wrapper: dict) -> None:
    """Mixed precision and norm weight decay of ``wrapper`` into ``t.config['train']`` (whose
    ``optimizer``, when translated, is already there)."""
    tr = t.config.setdefault("train", {})
    kind = wrapper.get("type", "OptimWrapper")
    if kind == "AmpOptimWrapper" and wrapper.get("dtype") in AMP_DTYPES:
        tr["amp"] = AMP_DTYPES[wrapper.get("dtype")]
        if wrapper.get("loss_scale", "dynamic") != "dynamic":
            t.dropped.append(f"optim_wrapper.loss_scale ({wrapper['loss_scale']}: dettool's GradScaler is dynamic)")
    elif kind == "AmpOptimWrapper":
        t.dropped.append(f"optim_wrapper.dtype ({wrapper['dtype']}: dettool's mixed precision is fp16 or bf16)")
    elif kind != "OptimWrapper":
        t.dropped.append(f"optim_wrapper.type ({kind}: dettool's mixed precision is train.amp)")
    paramwise = dict(wrapper.get("paramwise_cfg") or {})
    if "norm_decay_mult" in paramwise and "optimizer" in tr:
        tr["optimizer"]["norm_decay_mult"] = paramwise.pop("norm_decay_mult")
    t.dropped.extend(f"optim_wrapper.paramwise_cfg.{key}" for key in sorted(paramwise))
