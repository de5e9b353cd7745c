"""Detection losses. Each takes element-wise weights and an ``avg_factor`` (the normaliser)."""

from dettool.trainer.models.losses.cross_entropy_loss import BCEWithLogitsLoss
from dettool.trainer.models.losses.focal_loss import FocalLoss
from dettool.trainer.models.losses.iou_loss import GIoULoss, IoULoss
from dettool.trainer.models.losses.smooth_l1_loss import L1Loss, SmoothL1Loss
from dettool.trainer.models.losses.softmax_ce_loss import CrossEntropyLoss

__all__ = ["BCEWithLogitsLoss", "CrossEntropyLoss", "FocalLoss", "GIoULoss", "IoULoss", "L1Loss", "SmoothL1Loss"]
