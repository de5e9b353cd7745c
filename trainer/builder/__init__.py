"""The one place where config objects become constructor calls.

Models and data classes take plain typed keyword arguments and never see a config object. Each
component family has a module here with one ``Table`` keyed by config class (the whole
"registry"); a new component is its module under ``trainer/models`` plus one entry in the
table of its family.
"""
from dettool.trainer.builder.data import build_dataloader, build_dataset, ensure_synthetic, has_masks
from dettool.trainer.builder.detectors import build_model
from dettool.trainer.builder.hooks import build_hooks, import_hook
from dettool.trainer.builder.optim import build_optimizer

__all__ = ["build_dataloader", "build_dataset", "build_hooks", "build_model", "build_optimizer", "ensure_synthetic",
           "has_masks", "import_hook"]
