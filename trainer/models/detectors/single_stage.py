"""Single-stage detector: backbone -> neck -> dense head (RetinaNet, FCOS; an RPN alone)."""
from __future__ import annotations

import torch
from torch import nn

from dettool.structures.detections import Detections, DetOutputs, image_shapes_tensor, outputs_to_detections
from dettool.trainer.models.dense_heads.base_dense_head import BaseDenseHead


class SingleStageDetector(nn.Module):
    """Composes the parts; holds no export logic (exporters/ wraps ``forward`` + ``decode``).

    Shapes: ``images`` ``Tensor[B, 3, H, W]`` normalised and padded; ``targets`` per image
    ``boxes [N, 4]`` / ``labels [N]``; ``metas`` per image dicts from the data pipeline.
    """

    def __init__(self, backbone: nn.Module, neck: nn.Module, bbox_head: BaseDenseHead) -> None:
        super().__init__()
        self.backbone = backbone
        self.neck = neck
        self.bbox_head = bbox_head

    def forward(self, images: torch.Tensor) -> tuple:
        """Raw head outputs (see the head's ``forward``)."""
        return self.bbox_head(self.neck(self.backbone(images)))

    def loss(self, images: torch.Tensor, targets: list[dict], metas: list[dict]) -> dict[str, torch.Tensor]:
        """Loss terms ``{'loss_*': scalar}``."""
        return self.bbox_head.loss(self(images), targets, metas)

    def decode(self, raw: tuple, image_shapes: torch.Tensor) -> DetOutputs:
        """Fixed-size detections in input pixels from ``forward``'s output (the deploy graph's tail)."""
        return self.bbox_head.decode(raw, image_shapes)

    @torch.no_grad()
    def predict(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """Detections per image in original-image pixels."""
        shapes = image_shapes_tensor(metas, device=images.device)
        return outputs_to_detections(self.decode(self(images), shapes), metas)
