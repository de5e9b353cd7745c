"""Two-stage detector: backbone -> neck -> RPN (or given proposals) -> RoI head."""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import Detections, DetOutputs, image_shapes_tensor, outputs_to_detections
from dettool.trainer.models.postprocess.batched import pad_rows


class TwoStageDetector(nn.Module):
    """Faster / Mask / Cascade R-CNN, or Fast R-CNN when ``rpn_head`` is None.

    Fast R-CNN reads each image's proposals from ``meta['proposals']`` (``Tensor[K, 4 or 5]`` in
    resized-image pixels, put there by the dataset from a proposals file).

    Args:
        backbone, neck: feature extractor.
        rpn_head: ``RPNHead`` (with its training and test proposal settings) or None.
        roi_head: a RoI head (``loss`` on per-image proposals, ``decode`` on padded ones).
        rpn_levels, roi_levels: the neck levels the RPN and the RoI head read (all when None;
            R-FCN: C4 for the RPN, C5 for the RoI head).
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, rpn_head: nn.Module | None, roi_head: nn.Module,
                 rpn_levels: tuple[int, ...] | None = None, roi_levels: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.rpn_head = rpn_head
        self.roi_head = roi_head
        self.rpn_levels = None if rpn_levels is None else tuple(rpn_levels)
        self.roi_levels = None if roi_levels is None else tuple(roi_levels)

    def extract_feats(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Neck levels ``[B, C, H / s, W / s]`` (FPN's)."""
        return self.neck(self.backbone(images))

    @staticmethod
    def _pick(feats: list[torch.Tensor], levels: tuple[int, ...] | None) -> list[torch.Tensor]:
        return feats if levels is None else [feats[i] for i in levels]

    def forward(self, images: torch.Tensor) -> tuple:
        """Raw outputs: (the RoI head's levels, RPN (cls_scores, bbox_preds) or None)."""
        feats = self.extract_feats(images)
        rpn_raw = self.rpn_head(self._pick(feats, self.rpn_levels)) if self.rpn_head is not None else None
        return self._pick(feats, self.roi_levels), rpn_raw

    def _given_proposals(self, metas: list[dict], device: torch.device) -> list[torch.Tensor]:
        if any("proposals" not in m for m in metas):
            raise ValueError("Fast R-CNN needs proposals: set data.train.proposals_file / data.val.proposals_file")
        return [m["proposals"].to(device) for m in metas]

    def loss(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, torch.Tensor]:
        """RPN losses (``loss_rpn_*``) and RoI head losses."""
        feats, rpn_raw = self(images)
        losses: dict[str, torch.Tensor] = {}
        if self.rpn_head is not None:
            losses.update(self.rpn_head.loss(rpn_raw, targets, metas))
            proposals = self.rpn_head.proposal_list(rpn_raw, metas, training=True)
        else:
            proposals = self._given_proposals(metas, images.device)
        losses.update(self.roi_head.loss(feats, proposals, targets, metas))
        return losses

    def decode(self, raw: tuple, image_shapes: torch.Tensor) -> DetOutputs:
        """Fixed-size detections from ``forward``'s output: test-time proposals, then the RoI head
        (the deploy graph's tail; needs an RPN)."""
        feats, rpn_raw = raw
        proposals = self.rpn_head.proposals(rpn_raw, image_shapes, training=False)
        return self.roi_head.decode(feats, proposals.num_dets, proposals.boxes, image_shapes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """Detections per image in original pixels (masks pasted at the original size).

        The same path as ``decode``, with the proposals' trailing padding columns (rows no image
        of the batch fills) cut first: they would be scored 0 and never become detections.
        """
        feats, rpn_raw = self(images)
        shapes = image_shapes_tensor(metas, device=images.device)
        if self.rpn_head is not None:
            props = self.rpn_head.proposals(rpn_raw, shapes, training=False)
            num, boxes = props.num_dets, props.boxes
        else:
            num, boxes = pad_rows([p[:, :4].float() for p in self._given_proposals(metas, images.device)])
        boxes = boxes[:, : max(int(num.max()), 1) if num.numel() else 1]
        out = self.roi_head.decode(feats, num, boxes, shapes)
        branches = self.roi_head.mask_branches
        if not branches:
            return outputs_to_detections(out, metas)
        return outputs_to_detections(out, metas, branches[-1].mask_thr, branches[-1].mask_paste)
