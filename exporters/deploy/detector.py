"""The deploy graph of a trained detector: ``(images, image_shapes) -> fixed-size detections``.

``build_deploy_model`` wraps a trained dettool detector (never modifying its code) into a module
whose outputs have static shapes: ``num_dets [B]`` int32, ``boxes [B, K, 4]`` (pixels of the
input image), ``scores [B, K]``, ``labels [B, K]`` int32 and, for mask models, ``masks
[B, K, M, M]`` probabilities. Run eagerly, it computes with the reference implementations of the
dettool ops, so it can be checked against ``model.predict`` before any ONNX is written.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from dettool.errors import ExportError
from dettool.exporters.deploy.dense_postprocess import AnchorDecode, PointDecode, ProposalDecode
from dettool.exporters.deploy.roi_postprocess import DeployRoIHead
from dettool.exporters.deploy.swap import replace_deform_convs
from dettool.trainer.models.dense_heads.fcos_head import FCOSHead
from dettool.trainer.models.dense_heads.retina_head import RetinaHead
from dettool.trainer.models.dense_heads.rpn_head import ProposalSettings, RPNHead
from dettool.trainer.models.detectors.single_stage import SingleStageDetector
from dettool.trainer.models.detectors.two_stage import TwoStageDetector
from dettool.trainer.models.roi_heads.cascade_roi_head import CascadeRoIHead
from dettool.trainer.models.roi_heads.standard_roi_head import StandardRoIHead

OUTPUT_NAMES = ("num_dets", "boxes", "scores", "labels", "masks")
INPUT_NAMES = ("images", "image_shapes")


def _check_nms(test_cfg, where: str) -> None:
    if test_cfg.nms_type != "nms":
        raise ExportError(f"test.nms_type={test_cfg.nms_type} ({where}): Soft-NMS has no fixed-size deploy op; "
                          "export with --set test.nms_type=nms")


class DeployDetector(nn.Module):
    """Backbone, neck and a deploy head; ``forward(images [B, 3, H, W], image_shapes [B, 2])``.

    Args:
        backbone, neck: the trained modules (deformable convs already swapped).
        head: the trained dense head (single-stage / RPN) or RPN head (two-stage).
        decode: ``AnchorDecode`` / ``PointDecode`` / ``ProposalDecode`` for ``head``'s outputs.
        roi_head: ``DeployRoIHead`` for two-stage detectors, else None.
        model_type: family name written into the deploy metadata.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, head: nn.Module, decode: nn.Module,
                 roi_head: DeployRoIHead | None, model_type: str) -> None:
        super().__init__()
        self.backbone, self.neck, self.head, self.decode, self.roi_head = backbone, neck, head, decode, roi_head
        self.model_type = model_type

    @property
    def with_masks(self) -> bool:
        return self.roi_head is not None and self.roi_head.masks is not None

    @property
    def output_names(self) -> tuple[str, ...]:
        return OUTPUT_NAMES if self.with_masks else OUTPUT_NAMES[:4]

    def forward(self, images: torch.Tensor, image_shapes: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feats = self.neck(self.backbone(images))
        dets = self.decode(*self.head(feats), image_shapes)
        if self.roi_head is None:
            return dets
        num_proposals, proposals = dets[0], dets[1]
        return self.roi_head(feats, num_proposals, proposals, image_shapes)


class ProposalDetections(ProposalDecode):
    """An RPN evaluated alone: its proposals as class-0 detections (as ``RPNHead.predict``)."""

    def forward(self, cls_scores, bbox_preds, image_shapes):
        num, boxes, scores, levels = super().forward(cls_scores, bbox_preds, image_shapes)
        labels = torch.where(levels >= 0, torch.zeros_like(levels), levels)
        return num, boxes, scores, labels


def _dense_decode(head: nn.Module) -> tuple[nn.Module, str]:
    if isinstance(head, RPNHead):
        return ProposalDetections(head.anchor_generator, head.bbox_coder, head.proposal_cfg), "rpn"
    if isinstance(head, RetinaHead):
        _check_nms(head.test_cfg, "RetinaHead")
        return AnchorDecode(head.anchor_generator, head.bbox_coder, head.num_classes, head.test_cfg), "retinanet"
    if isinstance(head, FCOSHead):
        _check_nms(head.test_cfg, "FCOSHead")
        return PointDecode(head.strides, head.num_classes, head.norm_on_bbox, head.test_cfg), "fcos"
    raise ExportError(f"{type(head).__name__}: no deploy post-processing for this dense head")


def _roi_head(roi_head: nn.Module) -> tuple[DeployRoIHead, str]:
    _check_nms(roi_head.test_cfg, type(roi_head).__name__)
    if isinstance(roi_head, StandardRoIHead):
        masks = [roi_head.mask_branch] if roi_head.mask_branch is not None else None
        name = "mask_rcnn" if masks else "faster_rcnn"
        return DeployRoIHead(roi_head.roi_extractor, [roi_head.bbox_head], masks, roi_head.test_cfg), name
    if isinstance(roi_head, CascadeRoIHead):
        masks = list(roi_head.mask_branches) if roi_head.mask_branches is not None else None
        name = "cascade_mask_rcnn" if masks else "cascade_rcnn"
        return DeployRoIHead(roi_head.roi_extractor, list(roi_head.bbox_heads), masks, roi_head.test_cfg), name
    raise ExportError(f"{type(roi_head).__name__}: no deploy graph for this RoI head")


def build_deploy_model(model: nn.Module, test_proposals: ProposalSettings | None = None) -> DeployDetector:
    """Wrap a trained detector (in eval mode, float32) into its deploy graph.

    A deep copy is wrapped: the trained model is left as it is. ``ExportError`` names the model,
    head or setting that has no deploy form (Fast R-CNN's external proposals, Soft-NMS).
    """
    model = replace_deform_convs(copy.deepcopy(model).eval().float())
    if isinstance(model, SingleStageDetector):
        decode, name = _dense_decode(model.bbox_head)
        return DeployDetector(model.backbone, model.neck, model.bbox_head, decode, None, name).eval()
    if isinstance(model, TwoStageDetector):
        if model.rpn_head is None:
            raise ExportError("model.rpn_head is null (Fast R-CNN reads its proposals from a file): a deploy graph "
                              "has no proposals input; export a Faster R-CNN config instead")
        settings = test_proposals or model.test_proposals
        decode = ProposalDecode(model.rpn_head.anchor_generator, model.rpn_head.bbox_coder, settings)
        roi_head, name = _roi_head(model.roi_head)
        return DeployDetector(model.backbone, model.neck, model.rpn_head, decode, roi_head, name).eval()
    raise ExportError(f"{type(model).__name__}: not a dettool detector the exporter knows")
