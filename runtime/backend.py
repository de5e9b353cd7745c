"""One inference interface for every backend: ``infer(batch) -> detections``.

A batch is what dettool's data pipeline yields for evaluation: ``images`` ``Tensor[B, 3, H, W]``
(normalised, zero-padded) and one meta dict per image (``img_shape`` (h, w) of the resized,
unpadded image, ``scale_factor`` (sx, sy), ``ori_shape`` (h, w), ``image_id``). Detections come
back in original-image pixels, masks pasted at the original size, exactly like
``model.predict``. Deploy-graph backends share ``infer_in_pieces``: a batch cut into the batch
sizes the graph or engine accepts, then ``structures.detections.outputs_to_detections``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator

import torch

from dettool.structures.detections import Detections, DetOutputs, image_shapes_tensor, outputs_to_detections


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


def batch_pieces(images: torch.Tensor, image_shapes: torch.Tensor, max_batch: int,
                 min_batch: int = 1) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor]]:
    """A batch cut into the batch sizes an engine accepts, in order.

    Each piece holds at most ``max_batch`` images; a last piece shorter than ``min_batch`` (an
    engine or graph of fixed batch: ``min_batch == max_batch``) is filled up with copies of its
    last image, whose detections the caller drops.

    Args:
        images: ``Tensor[B, 3, H, W]``.
        image_shapes: ``Tensor[B, 2]``.
        max_batch, min_batch: the accepted batch sizes, ``1 <= min_batch <= max_batch``.

    Yields:
        ``(start, num_real, piece_images [P, 3, H, W], piece_shapes [P, 2])``: the piece holds
        images ``start .. start + num_real - 1`` of the batch, then ``P - num_real`` copies.
    """
    if not 1 <= min_batch <= max_batch:
        raise ValueError(f"batch bounds must satisfy 1 <= min_batch <= max_batch, not {min_batch}, {max_batch}")
    for start in range(0, images.shape[0], max_batch):
        piece, piece_shapes = images[start:start + max_batch], image_shapes[start:start + max_batch]
        num_real = piece.shape[0]
        if num_real < min_batch:
            pad = min_batch - num_real
            piece = torch.cat([piece, piece[-1:].expand(pad, *piece.shape[1:])])
            piece_shapes = torch.cat([piece_shapes, piece_shapes[-1:].expand(pad, *piece_shapes.shape[1:])])
        yield start, num_real, piece, piece_shapes


def infer_in_pieces(run: Callable[[torch.Tensor, torch.Tensor], DetOutputs], images: torch.Tensor,
                    metas: list[dict], *, max_batch: int, min_batch: int = 1, mask_thr: float = 0.5,
                    mask_paste: str = "mmdet") -> list[Detections]:
    """Detections of each image of a batch, ``run`` called once per piece (``batch_pieces``).

    Args:
        run: ``(images [P, 3, H, W], image_shapes [P, 2]) -> DetOutputs`` of P images.
        images, metas: the batch (``Backend.infer``'s arguments).
        max_batch, min_batch: the batch sizes ``run`` accepts.
        mask_thr, mask_paste: as ``outputs_to_detections``.

    Returns: one ``Detections`` per image of ``images``; padding rows are dropped.
    """
    dets: list[Detections] = []
    for start, num_real, piece, piece_shapes in batch_pieces(images, image_shapes_tensor(metas), max_batch,
                                                              min_batch):
        out = run(piece, piece_shapes)
        real = DetOutputs(*(None if t is None else t[:num_real] for t in out))
        dets += outputs_to_detections(real, metas[start:start + num_real], mask_thr, mask_paste)
    return dets
