"""The deploy graph of a trained detector: ``(images, image_shapes) -> fixed-size detections``.

A trained detector already computes its test-time path in batched, fixed-size form
(``model.decode(model(images), image_shapes)``, dettool's ops at its end), so the deploy graph
is that call with named inputs and outputs: ``num_dets [B]`` int32, ``boxes [B, K, 4]`` (pixels
of the input image), ``scores [B, K]``, ``labels [B, K]`` int32 and, for mask models, ``masks
[B, K, M, M]`` probabilities. What is exported is decided here, by one adapter per head class:
the family name written into the deploy metadata and the settings that have no fixed-size form.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn

from dettool.errors import ExportError
from dettool.exporters.deploy.sync_batch_norm import revert_sync_batch_norm
from dettool.exporters.deploy.weight_standardization import fold_weight_standardization
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.fsaf_head import FSAFHead
from dettool.trainer.models.dense_heads.ga_retina_head import GARetinaHead
from dettool.trainer.models.dense_heads.ga_rpn_head import GARPNHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.dense_heads.rpn_head import RPNHead
from dettool.trainer.models.dense_heads.ssd_head import SSDHead
from dettool.trainer.models.detectors.single_stage import SingleStageDetector
from dettool.trainer.models.detectors.two_stage import TwoStageDetector
from dettool.trainer.models.roi_heads.cascade_roi_head import CascadeRoIHead
from dettool.trainer.models.roi_heads.double_roi_head import DoubleHeadRoIHead
from dettool.trainer.models.roi_heads.grid_roi_head import GridRoIHead
from dettool.trainer.models.roi_heads.htc_roi_head import HybridTaskCascadeRoIHead
from dettool.trainer.models.roi_heads.mask_scoring_roi_head import MaskScoringRoIHead
from dettool.trainer.models.roi_heads.rfcn_head import RFCNRoIHead
from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels", "masks")
INPUT_NAMES = ("images", "image_shapes")


def _hard_nms(head: nn.Module) -> None:
    if head.test_cfg.nms_type != "nms":
        raise ExportError(f"test.nms_type={head.test_cfg.nms_type} ({type(head).__name__}): Soft-NMS has no "
                          "fixed-size deploy op; export with --set test.nms_type=nms")


def _named(name: str, *, masks: str | None = None, check: Callable[[nn.Module], None] = _hard_nms):
    """An adapter: checks the head, then names the family (``masks``: the name with a mask branch)."""
    def adapter(head: nn.Module) -> str:
        check(head)
        return masks if masks and getattr(head, "mask_branches", None) else name
    return adapter


# Head class -> adapter(head) -> model family; a head missing here has no deploy graph.
DENSE_HEAD_ADAPTERS: dict[type, Callable[[nn.Module], str]] = {
    RetinaHead: _named("retinanet"),
    FCOSHead: _named("fcos"),
    FSAFHead: _named("fsaf"),
    GARetinaHead: _named("ga_retinanet"),
    SSDHead: _named("ssd"),
    RPNHead: _named("rpn", check=lambda head: None),
    GARPNHead: _named("rpn", check=lambda head: None),  # proposals only, as an RPN's
}
ROI_HEAD_ADAPTERS: dict[type, Callable[[nn.Module], str]] = {
    StandardRoIHead: _named("faster_rcnn", masks="mask_rcnn"),
    DoubleHeadRoIHead: _named("double_head_rcnn", masks="double_head_mask_rcnn"),
    CascadeRoIHead: _named("cascade_rcnn", masks="cascade_mask_rcnn"),
    RFCNRoIHead: _named("rfcn"),
    MaskScoringRoIHead: _named("ms_rcnn"),
    GridRoIHead: _named("grid_rcnn", masks="grid_mask_rcnn"),
    HybridTaskCascadeRoIHead: _named("htc"),
}


def _adapt(table: dict[type, Callable[[nn.Module], str]], head: nn.Module) -> str:
    adapter = table.get(type(head))
    if adapter is None:
        raise ExportError(f"{type(head).__name__}: no deploy graph for this head (exportable: "
                          f"{', '.join(sorted(c.__name__ for c in table))})")
    return adapter(head)


class DeployDetector(nn.Module):
    """``forward(images [B, 3, H, W], image_shapes [B, 2])`` -> the model's fixed-size detections.

    Args:
        model: the trained detector (a copy in eval mode, float32).
        model_type: family name written into the deploy metadata.
        with_masks: whether the outputs include ``masks``.
    """

    def __init__(self, model: nn.Module, model_type: str, with_masks: bool) -> None:
        super().__init__()
        self.model, self.model_type, self.with_masks = model, model_type, with_masks

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES if self.with_masks else OUTPUT_NAMES[:4]

    def forward(self, images: torch.Tensor, image_shapes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.decode(self.model(images), image_shapes)
        return tuple(out) if self.with_masks else tuple(out[:4])


def _single_stage(model: SingleStageDetector) -> DeployDetector:
    return DeployDetector(model, _adapt(DENSE_HEAD_ADAPTERS, model.bbox_head), with_masks=False)


def _two_stage(model: TwoStageDetector) -> DeployDetector:
    if model.rpn_head is None:
        raise ExportError("model.rpn_head is null (Fast R-CNN reads its proposals from a file): a deploy graph "
                          "has no proposals input; export a Faster R-CNN config instead")
    name = _adapt(ROI_HEAD_ADAPTERS, model.roi_head)
    return DeployDetector(model, name, with_masks=bool(model.roi_head.mask_branches))


DETECTOR_ADAPTERS: dict[type, Callable[[nn.Module], DeployDetector]] = {
    SingleStageDetector: _single_stage,
    TwoStageDetector: _two_stage,
}


def build_deploy_model(model: nn.Module) -> DeployDetector:
    """Wrap a trained detector into its deploy graph (a deep copy, in eval mode, float32, its
    weight-standardized convs folded into plain ones, its SyncBatchNorms plain BatchNorms).

    ``ExportError`` names the model, head or setting that has no deploy form (Fast R-CNN's
    external proposals, Soft-NMS, a head without an adapter).
    """
    adapter = DETECTOR_ADAPTERS.get(type(model))
    if adapter is None:
        raise ExportError(f"{type(model).__name__}: not a dettool detector the exporter knows")
    plain = revert_sync_batch_norm(fold_weight_standardization(copy.deepcopy(model).eval().float()))
    return adapter(plain).eval()
