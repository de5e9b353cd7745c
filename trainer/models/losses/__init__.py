"""Detection losses. Each takes element-wise weights and an ``avg_factor`` (the normaliser)."""

from dettool.trainer.models.losses.balanced_l1_loss import BalancedL1Loss
from dettool.trainer.models.losses.binary_cross_entropy_loss import BCEWithLogitsLoss
from dettool.trainer.models.losses.bounded_iou_loss import BoundedIoULoss
from dettool.trainer.models.losses.cross_entropy_loss import CrossEntropyLoss
from dettool.trainer.models.losses.focal_loss import FocalLoss
from dettool.trainer.models.losses.ghm_loss import GHMCLoss, GHMRLoss
from dettool.trainer.models.losses.iou_loss import GIoULoss, IoULoss
from dettool.trainer.models.losses.smooth_l1_loss import L1Loss, SmoothL1Loss

__all__ = ["BalancedL1Loss", "BCEWithLogitsLoss", "CrossEntropyLoss", "FocalLoss", "GHMCLoss", "GHMRLoss", "GIoULoss",
           "IoULoss", "L1Loss", "SmoothL1Loss", "BoundedIoULoss"]
