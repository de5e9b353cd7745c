"""What a deploy graph carries about itself, so that a runtime needs nothing else.

Written by ``dettool export`` into the ONNX model's ``metadata_props`` (key ``dettool``) and into
a sidecar ``<model>.json``; read by every runtime backend and by ``dettool eval-engine``.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dettool.config.schema import Config
from dettool.data.pipeline import Pipeline, test_pipeline
from dettool.errors import DataError

FORMAT = "dettool-deploy"
FORMAT_VERSION = 1
METADATA_KEY = "dettool"


@dataclass(frozen=True)
class Preprocess:
    """How a runtime turns an image file into the graph's ``images`` input (dettool's fixed test
    pipeline: Resize, Normalize, Pad).

    Resize of the RGB image (PIL bilinear): with ``keep_ratio`` to fit ``test_scale``
    (``1333x800``: long side <= 1333, short side <= 800, aspect ratio kept); without, to exactly
    ``test_scale`` read as ``WxH`` (``300x300``). Then the channels in ``channel_order`` (``bgr``:
    reversed, caffe-style models), ``(pixel - mean) / std`` per channel (``mean``, ``std`` in that
    order) and zero padding bottom-right to a multiple of ``size_divisor``. Metadata written
    before ``keep_ratio`` / ``channel_order`` existed reads as ``keep_ratio=True`` /
    ``channel_order='rgb'``, what those exports did.
    """

    test_scale: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    size_divisor: int = 32
    keep_ratio: bool = True
    channel_order: str = "rgb"

    @classmethod
    def of_config(cls, cfg: Config) -> "Preprocess":
        """The test-time preprocessing of ``cfg.data``."""
        d = cfg.data
        return cls(test_scale=d.test_scale, mean=tuple(d.mean), std=tuple(d.std), size_divisor=d.size_divisor,
                   keep_ratio=d.keep_ratio, channel_order=d.channel_order)

    def pipeline(self) -> Pipeline:
        """The per-image steps (Resize, Normalize) as ``dettool eval`` runs them; Pad is batching's."""
        return test_pipeline(self.test_scale, keep_ratio=self.keep_ratio, mean=self.mean, std=self.std,
                             channel_order=self.channel_order, key="preprocess.test_scale")


@dataclass(frozen=True)
class Postprocess:
    """Decoding settings baked into the graph (for the record) and the runtime's mask step."""

    score_thr: float
    nms_iou_thr: float
    max_per_img: int
    mask_thr: float = 0.5
    mask_paste: str = "mmdet"

    @classmethod
    def of_config(cls, cfg: Config) -> "Postprocess":
        """The test-time decoding settings of ``cfg.test``."""
        t = cfg.test
        return cls(score_thr=t.score_thr, nms_iou_thr=t.nms_iou_thr, max_per_img=t.max_per_img, mask_thr=t.mask_thr,
                   mask_paste=t.mask_paste)


@dataclass(frozen=True)
class DeployMetadata:
    """Everything about a deploy graph that is not in its tensors.

    Graph inputs: ``images`` float32 ``[B, 3, H, W]`` (normalised, zero-padded) and
    ``image_shapes`` float32 ``[B, 2]`` (height, width of each image's unpadded region, used to
    clip boxes). Outputs: ``num_dets`` int32 ``[B]``, ``boxes`` float32 ``[B, K, 4]`` (xyxy pixels
    of the input image), ``scores`` float32 ``[B, K]``, ``labels`` int32 ``[B, K]`` (contiguous
    class index, -1 in padding rows) and, for mask models, ``masks`` float32 ``[B, K, M, M]``
    (RoI-resolution probabilities, pasted at full resolution by the runtime).
    """

    model_type: str
    class_names: tuple[str, ...]
    cat_ids: tuple[int, ...]
    preprocess: Preprocess
    postprocess: Postprocess
    with_masks: bool
    flavour: str  # "custom" (dettool ops) or "portable" (standard ONNX ops only)
    precision: str  # "fp32" or "fp16"
    opset: int
    custom_ops: tuple[str, ...]
    dynamic_batch: bool
    export_batch: int
    dettool_version: str
    source_config: str = ""
    source_checkpoint: str = ""
    checkpoint_sha256: str = ""
    format: str = FORMAT
    format_version: int = FORMAT_VERSION
    extra: dict = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    @classmethod
    def from_json(cls, text: str, origin: str) -> "DeployMetadata":
        """Parse; ``DataError`` names ``origin`` when the text is not dettool deploy metadata."""
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{origin}: deploy metadata is not valid JSON ({exc})") from None
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise DataError(f"{origin}: not dettool deploy metadata (no format '{FORMAT}')")
        if raw.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{origin}: deploy metadata version {raw.get('format_version')} is not "
                            f"{FORMAT_VERSION}; re-export the model with this dettool")
        try:
            raw["preprocess"] = Preprocess(**{**raw["preprocess"], "mean": tuple(raw["preprocess"]["mean"]),
                                              "std": tuple(raw["preprocess"]["std"])})
            raw["postprocess"] = Postprocess(**raw["postprocess"])
            for key in ("class_names", "cat_ids", "custom_ops"):
                raw[key] = tuple(raw[key])
            return cls(**raw)
        except (KeyError, TypeError) as exc:
            raise DataError(f"{origin}: malformed deploy metadata ({exc})") from None


def sidecar_path(model_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.json`` (also for engine files)."""
    return Path(model_path).with_suffix(".json")
