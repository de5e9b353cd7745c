"""One inference interface for every backend: ``infer(batch) -> detections``.

A batch is what dettool's data pipeline yields for evaluation: ``images`` ``Tensor[B, 3, H, W]``
(normalised, zero-padded) and one meta dict per image (``img_shape`` (h, w) of the resized,
unpadded image, ``scale_factor`` (sx, sy), ``ori_shape`` (h, w), ``image_id``). Detections come
back in original-image pixels, masks pasted at the original size, exactly like
``model.predict``. Deploy-graph backends share ``structures.detections.outputs_to_detections``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from dettool.structures.detections import Detections


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
