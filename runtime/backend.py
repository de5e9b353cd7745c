"""One inference interface for every backend: ``infer(batch) -> detections``.

A batch is what dettool's data pipeline yields for evaluation: ``images`` ``Tensor[B, 3, H, W]``
(normalised, zero-padded) and one meta dict per image (``img_shape`` (h, w) of the resized,
unpadded image, ``scale_factor`` (sx, sy), ``ori_shape`` (h, w), ``image_id``). Detections come
back in original-image pixels, masks pasted at the original size, exactly like
``model.predict``. Deploy-graph backends share :func:`outputs_to_detections`.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch

from dettool.trainer.models.dense_heads.base_dense_head import rescale_boxes
from dettool.trainer.models.roi_heads.mask_head import paste_masks
from dettool.trainer.models.structures import Detections


@dataclass
class DeployOutputs:
    """The fixed-size outputs of a deploy graph (see ``runtime.metadata.DeployMetadata``).

    Attributes:
        num_dets: ``Tensor[B]`` int.
        boxes: ``Tensor[B, K, 4]`` xyxy in input-image pixels.
        scores: ``Tensor[B, K]``.
        labels: ``Tensor[B, K]`` int (-1 in padding rows).
        masks: ``Tensor[B, K, M, M]`` probabilities, or None.
    """

    num_dets: torch.Tensor
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor | None = None


def image_shapes_tensor(metas: list[dict]) -> torch.Tensor:
    """``Tensor[B, 2]`` float32 (h, w) of each image's unpadded region: the graphs' second input."""
    return torch.tensor([[float(m["img_shape"][0]), float(m["img_shape"][1])] for m in metas], dtype=torch.float32)


def outputs_to_detections(out: DeployOutputs, metas: list[dict], mask_thr: float = 0.5) -> list[Detections]:
    """Cut each image's rows at ``num_dets``, rescale boxes to the original image and paste masks."""
    dets = []
    for i, meta in enumerate(metas):
        n = int(out.num_dets[i])
        boxes = out.boxes[i, :n].float()
        boxes_ori = rescale_boxes(boxes, meta)
        masks = None
        if out.masks is not None:
            masks = paste_masks(out.masks[i, :n].float(), boxes_ori, meta["ori_shape"], threshold=mask_thr)
        dets.append(Detections(boxes_ori, out.scores[i, :n].float(), out.labels[i, :n].long(), masks=masks))
    return dets


class Backend(ABC):
    """An inference engine for one exported (or eager) detector.

    Attributes:
        name: ``torch``, ``onnxruntime`` or ``tensorrt``.
        device: where ``infer`` wants its inputs.
    """

    name: str = ""
    device: torch.device = torch.device("cpu")

    @abstractmethod
    def infer(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """Detections of each image of the batch, in original-image pixels."""

    def synchronize(self) -> None:
        """Wait for queued device work (latency measurement); a no-op on the CPU."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
