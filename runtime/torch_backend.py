"""The eager PyTorch backend: ``model.predict`` behind the ``Backend`` interface (the reference
every exported engine is compared with)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from dettool.config.schema import Config
from dettool.runtime.backend import Backend
from dettool.structures.detections import Detections


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` -> CUDA when available, else CPU; ``BackendError`` for CUDA on a machine without it."""
    from dettool.errors import BackendError

    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"--device {device}: torch sees no CUDA device here; use --device cpu")
    return device


class TorchBackend(Backend):
    """A trained dettool detector run eagerly on the CPU or a CUDA device.

    Args:
        model: a dettool detector (``SingleStageDetector`` / ``TwoStageDetector``); put in eval mode
            and moved to ``device``.
        device: where the model runs.
    """

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device = "cpu") -> None:
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()

    @classmethod
    def from_checkpoint(cls, cfg: Config, checkpoint: str | Path,
                        device: str | torch.device | None = None) -> "TorchBackend":
        """Build ``cfg``'s model and load ``checkpoint`` (``CheckpointError`` when they do not match)."""
        from dettool.trainer.evaluate import load_trained_model

        dev = resolve_device(device)
        return cls(load_trained_model(cfg, checkpoint, dev), dev)

    @torch.inference_mode()
    def infer(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """``images [B, 3, H, W]`` (normalised, zero-padded) -> B ``Detections`` on ``self.device``."""
        return self.model.predict(images.to(self.device, non_blocking=True), metas)
