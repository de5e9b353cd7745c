"""``Detector``: a trained or exported detector as one object an application imports.

Built from a deploy artifact alone (an ONNX deploy graph of any flavour, or a dettool TensorRT
engine: both carry their metadata) or from a config and a checkpoint (eager PyTorch). It does
what ``dettool eval`` does to an image, and nothing else: decode (EXIF orientation applied,
grayscale / palette / RGBA made RGB as the dataset loader does), the test pipeline of the
metadata (keep-ratio or exact resize, normalisation; ``Preprocess.pipeline``), zero padding of
the batch to the size divisor, the backend's ``infer``, and the detections back in
original-image pixels with full-resolution masks::

    from dettool.runtime import Detector

    detector = Detector.load("work_dirs/quickstart/deploy/model.onnx")  # or an engine, or a .pth + config=
    for result in detector(["street.jpg", "dog.png"], batch_size=2):
        print(result.file_name, result.boxes, result.scores, result.class_names)
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np
import torch
from PIL import Image

from dettool.data.coco import image_to_rgb, load_image
from dettool.data.sample import Sample
from dettool.data.transforms import pad_batch
from dettool.errors import BackendError, DataError
from dettool.evaluation.coco_eval import encode_masks
from dettool.runtime.backend import Backend
from dettool.runtime.metadata import Postprocess, Preprocess
from dettool.structures.detections import Detections

ImageInput = Union[str, Path, Image.Image, np.ndarray]
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt")


@dataclass
class DetectionResult:
    """The detections of one image, in its original pixels (NumPy arrays, on the CPU).

    Attributes:
        boxes: float32 ``[K, 4]`` xyxy, highest score first.
        scores: float32 ``[K]``.
        labels: int64 ``[K]`` contiguous class indices in ``[0, C)``.
        class_names: the ``K`` class names.
        cat_ids: int64 ``[K]`` dataset category ids (what COCO results carry).
        masks: bool ``[K, H, W]`` instance masks at the original size, or None (box-only models).
        image_size: ``(H, W)`` of the original image (after its EXIF orientation).
        file_name: the image file's name, or None for an in-memory image.
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray
    class_names: list[str]
    cat_ids: np.ndarray
    masks: np.ndarray | None
    image_size: tuple[int, int]
    file_name: str | None = None

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def rles(self) -> list[dict]:
        """The masks as compressed COCO RLEs (``counts`` a str: JSON-ready); [] without masks."""
        return encode_masks(torch.from_numpy(self.masks)) if self.masks is not None else []

    def to_coco(self, image_id: int) -> list[dict]:
        """COCO result dicts (``image_id``, ``category_id``, xywh ``bbox``, ``score``, and
        ``segmentation`` RLE for masks; ``file_name`` when known)."""
        rles = self.rles()
        out = []
        for i in range(len(self)):
            x1, y1, x2, y2 = (float(v) for v in self.boxes[i])
            row = {"image_id": int(image_id), "category_id": int(self.cat_ids[i]),
                   "bbox": [x1, y1, x2 - x1, y2 - y1], "score": float(self.scores[i])}
            if self.file_name is not None:
                row["file_name"] = self.file_name
            if rles:
                row["segmentation"] = rles[i]
            out.append(row)
        return out


def read_image(image: ImageInput) -> Image.Image:
    """An input as the RGB image the dataset loader would make of it.

    Args:
        image: a file path; a PIL image (EXIF orientation applied, converted to RGB); or an
            ``np.ndarray`` uint8 ``[H, W]`` (grayscale), ``[H, W, 3]`` (RGB) or ``[H, W, 4]`` (RGBA).

    ``DataError`` names a file that cannot be decoded or an array of another shape or type.
    """
    if isinstance(image, (str, Path)):
        return load_image(Path(image))
    if isinstance(image, Image.Image):
        return image_to_rgb(image)
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in (3, 4)):
            raise DataError(f"image array of shape {list(image.shape)} and type {image.dtype}: expected uint8 "
                            f"[H, W], [H, W, 3] (RGB) or [H, W, 4] (RGBA)")
        return image_to_rgb(Image.fromarray(image))
    raise DataError(f"cannot read an image from a {type(image).__name__}: give a path, a PIL image or an array")


def model_kind(path: str | Path) -> str:
    """``onnxruntime``, ``tensorrt`` or ``torch``: the backend that runs the file at ``path``
    (by its first bytes: a TensorRT plan, a zip-format torch checkpoint, else by its suffix)."""
    from dettool.runtime.onnxruntime_backend import looks_like_engine

    path = Path(path)
    if not path.is_file():
        raise BackendError(f"{path}: model file not found")
    if looks_like_engine(path):
        return "tensorrt"
    with open(path, "rb") as f:
        zip_file = f.read(4) == b"PK\x03\x04"
    if zip_file or path.suffix.lower() in CHECKPOINT_SUFFIXES:
        return "torch"
    return "onnxruntime"


class Detector:
    """Run a detector on images: pre-processing, batching, the backend, results per image.

    Args:
        backend: the ``Backend`` running the model (its ``infer`` takes the padded, normalised
            batch and the per-image metas).
        preprocess: the test pipeline the model was trained with.
        postprocess: the decoding settings (``score_thr`` is the lowest score the model returns).
        class_names, cat_ids: per contiguous label.
        with_masks: whether results carry masks.
        proposals_only: an RPN: every detection is a class-agnostic proposal, named
            ``proposal`` with the first category id (as ``dettool eval`` writes them).

    Use ``Detector.load`` to build one from a file.
    """

    def __init__(self, backend: Backend, *, preprocess: Preprocess, postprocess: Postprocess,
                 class_names: Sequence[str], cat_ids: Sequence[int], with_masks: bool,
                 proposals_only: bool = False) -> None:
        if len(class_names) != len(cat_ids):
            raise BackendError(f"{len(class_names)} class names but {len(cat_ids)} category ids")
        if proposals_only:
            class_names, cat_ids = ["proposal"], list(cat_ids[:1])
        self.proposals_only = proposals_only
        self.backend = backend
        self.preprocess = preprocess
        self.postprocess = postprocess
        self.class_names = list(class_names)
        self.cat_ids = np.asarray(cat_ids, dtype=np.int64)
        self.with_masks = with_masks
        self.pipeline = preprocess.pipeline()

    @classmethod
    def load(cls, model: str | Path, config: str | Path | None = None, *, device: str | None = None,
             providers: Sequence[str] | None = None, threads: int | None = None,
             overrides: Iterable[str] = ()) -> "Detector":
        """A ``Detector`` for the file ``model``.

        Args:
            model: an ``.onnx`` deploy graph (ONNX Runtime), a dettool TensorRT engine, or a
                checkpoint (``.pth``; eager PyTorch, then ``config`` is required).
            config: the checkpoint's config YAML (only for a checkpoint).
            device: ``cpu`` or ``cuda[:N]`` (default: CUDA when available). For ONNX Runtime it
                picks the execution provider.
            providers: ONNX Runtime execution providers, overriding ``device`` (e.g.
                ``["CUDAExecutionProvider", "CPUExecutionProvider"]``).
            threads: CPU threads (ONNX Runtime's intra-op threads; for a checkpoint, torch's
                ``set_num_threads``, which is process-wide). Default: torch's current count.
            overrides: ``KEY=VALUE`` config overrides (only for a checkpoint).

        ``BackendError`` / ``ConfigError`` / ``CheckpointError``: one line naming the file and
        what is wrong with it.
        """
        kind = model_kind(model)
        if threads is not None and threads < 1:
            raise BackendError(f"threads={threads}: must be at least 1")
        if kind == "torch":
            return cls._from_checkpoint(model, config, device=device, threads=threads, overrides=overrides)
        if config is not None:
            raise BackendError(f"{model}: a deploy graph carries its own settings; config is only for a checkpoint")
        from dettool.runtime import load_backend

        # ONNX Runtime's threads do not spin between runs: they would take the cores that
        # pre-process the next batch (benchmarks/detector_overhead.py: 42 -> 37 ms per image)
        backend = load_backend(kind, model, device, providers=providers, threads=threads, spin=False)
        meta = backend.meta
        return cls(backend, preprocess=meta.preprocess, postprocess=meta.postprocess, class_names=meta.class_names,
                   cat_ids=meta.cat_ids, with_masks=meta.with_masks, proposals_only=meta.model_type == "rpn")

    @classmethod
    def _from_checkpoint(cls, checkpoint: str | Path, config: str | Path | None, *, device: str | None,
                         threads: int | None, overrides: Iterable[str]) -> "Detector":
        from dettool.config import load_config
        from dettool.config.schema import RPNConfig
        from dettool.runtime.torch_backend import TorchBackend
        from dettool.trainer.builder.data import has_masks
        from dettool.trainer.checkpoint import checkpoint_classes, load_checkpoint

        if config is None:
            raise BackendError(f"{checkpoint}: a checkpoint needs its config (--config CFG)")
        cfg = load_config(config, list(overrides))
        if threads is not None:
            torch.set_num_threads(threads)
        names, cat_ids = checkpoint_classes(load_checkpoint(checkpoint), cfg.model.num_classes, cfg.data.category_ids)
        backend = TorchBackend.from_checkpoint(cfg, checkpoint, device)
        return cls(backend, preprocess=Preprocess.of_config(cfg), postprocess=Postprocess.of_config(cfg),
                   class_names=names, cat_ids=cat_ids, with_masks=has_masks(cfg),
                   proposals_only=isinstance(cfg.model, RPNConfig))

    def prepare(self, images: Sequence[Image.Image]) -> tuple[torch.Tensor, list[dict]]:
        """RGB images -> the backend's input: ``Tensor[B, 3, H, W]`` (normalised, zero-padded to
        the size divisor) and one meta per image, exactly as ``dettool eval``'s data loader."""
        tensors, metas = [], []
        for i, img in enumerate(images):
            sample = Sample(img=img, boxes=torch.zeros((0, 4)), labels=torch.zeros(0, dtype=torch.int64),
                            ignore_boxes=torch.zeros((0, 4)))
            sample = self.pipeline(sample, np.random.default_rng(0))  # the test pipeline draws nothing
            tensors.append(sample.img)
            metas.append({"image_id": i, "ori_shape": (img.height, img.width), "img_shape": sample.img_shape,
                          "scale_factor": sample.scale_factor, "flip": False})
        batch = pad_batch(tensors, self.preprocess.size_divisor)
        for meta in metas:
            meta["pad_shape"] = (batch.shape[2], batch.shape[3])
        return batch, metas

    def results(self, dets: Sequence[Detections], metas: Sequence[dict], score_thr: float | None = None,
                file_names: Sequence[str | None] | None = None) -> list[DetectionResult]:
        """The backend's detections as ``DetectionResult`` (scores below ``score_thr`` dropped)."""
        out = []
        for i, (det, meta) in enumerate(zip(dets, metas)):
            keep = det.scores >= score_thr if score_thr is not None else slice(None)
            labels = det.labels[keep].cpu().numpy().astype(np.int64)
            masks = det.masks[keep].cpu().numpy().astype(bool) if det.masks is not None else None
            out.append(DetectionResult(
                boxes=det.boxes[keep].float().cpu().numpy(), scores=det.scores[keep].float().cpu().numpy(),
                labels=labels, class_names=[self.class_names[k] for k in labels], cat_ids=self.cat_ids[labels],
                masks=masks, image_size=tuple(meta["ori_shape"]),
                file_name=file_names[i] if file_names is not None else None))
        return out

    def predict(self, images: Sequence[ImageInput], score_thr: float | None = None) -> list[DetectionResult]:
        """One batch: every image of ``images`` through the backend at once."""
        if not images:
            return []
        rgb = [read_image(image) for image in images]
        names = [Path(image).name if isinstance(image, (str, Path)) else None for image in images]
        batch, metas = self.prepare(rgb)
        return self.results(self.backend.infer(batch, metas), metas, score_thr, names)

    def iter_predict(self, images: Iterable[ImageInput], batch_size: int = 1,
                     score_thr: float | None = None) -> Iterator[DetectionResult]:
        """Results one image at a time, running ``batch_size`` images per backend call."""
        if batch_size < 1:
            raise BackendError(f"batch_size={batch_size}: must be at least 1")
        chunk: list[ImageInput] = []
        for image in images:
            chunk.append(image)
            if len(chunk) == batch_size:
                yield from self.predict(chunk, score_thr)
                chunk = []
        if chunk:
            yield from self.predict(chunk, score_thr)

    def __call__(self, images: ImageInput | Sequence[ImageInput], batch_size: int = 1,
                 score_thr: float | None = None) -> list[DetectionResult]:
        """Results of one image (a list of one) or of a list of images, ``batch_size`` per call."""
        if isinstance(images, (str, Path, Image.Image, np.ndarray)):
            images = [images]
        return list(self.iter_predict(images, batch_size, score_thr))

    def __repr__(self) -> str:
        return (f"Detector({self.backend.name}, {len(self.class_names)} classes, "
                f"{'masks, ' if self.with_masks else ''}test_scale {self.preprocess.test_scale})")
