"""ONNX Runtime backend: a dettool deploy graph (custom-op or portable, FP32 or FP16) run by
``onnxruntime`` through ``runtime.ort_custom_ops.make_session``.

The file is checked before ONNX Runtime sees it, so each way of handing over the wrong file ends
in one ``BackendError`` line naming it: missing, a TensorRT engine, corrupt or truncated, an ONNX
model that is not a dettool deploy graph. A graph whose batch is fixed (exported without
``--dynamic-batch``) is fed in pieces of that batch, the last piece padded.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from dettool.errors import BackendError, DataError, DettoolError
from dettool.runtime.backend import Backend, infer_in_pieces
from dettool.runtime.metadata import METADATA_KEY, DeployMetadata, sidecar_path
from dettool.structures.detections import Detections, DetOutputs

INPUT_NAMES = ("images", "image_shapes")
REQUIRED_OUTPUTS = ("num_dets", "boxes", "scores", "labels")
ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
# dettool engine files (runtime/engine_file.py) and TensorRT's own serialized plans
ENGINE_MAGICS = (b"DTTRTENG", b"ftrt", b"ptrt")
CUDA_PROVIDER, CPU_PROVIDER = "CUDAExecutionProvider", "CPUExecutionProvider"


def note(message: str) -> None:
    """A one-line remark on stderr (not an error)."""
    print(f"dettool: note: {message}", file=sys.stderr, flush=True)


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[0] if lines else type(exc).__name__)[:300]


def looks_like_engine(path: Path) -> bool:
    """Whether the file starts like a TensorRT plan or a dettool engine (or has an engine suffix and is not ONNX)."""
    with open(path, "rb") as f:
        head = f.read(16)
    return any(magic in head for magic in ENGINE_MAGICS) or (
        path.suffix.lower() in ENGINE_SUFFIXES and not head.startswith(b"\x08"))  # ONNX starts with ir_version


def load_onnx_model(path: str | Path) -> onnx.ModelProto:
    """Parse an ONNX file (with any external data); ``BackendError`` says what the file is instead."""
    path = Path(path)
    if not path.exists():
        raise BackendError(f"{path}: model file not found")
    if not path.is_file():
        raise BackendError(f"{path}: is a folder, not an ONNX model file")
    if looks_like_engine(path):
        raise BackendError(f"{path}: is not an ONNX model (a TensorRT engine? use --backend tensorrt)")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # protobuf DecodeError, missing external data, ...
        raise BackendError(f"{path}: not a readable ONNX model, the file is corrupt or truncated "
                           f"({type(exc).__name__}: {_first_line(exc)})") from None
    if model.ir_version == 0 or len(model.graph.node) == 0:
        raise BackendError(f"{path}: is not an ONNX model (no graph in it; empty or another kind of file)")
    return model


def read_deploy_metadata(model: onnx.ModelProto, path: str | Path) -> DeployMetadata:
    """The model's ``dettool`` metadata, else its sidecar ``<model>.json``; ``BackendError`` when
    the model is not a dettool deploy graph."""
    path = Path(path)
    names = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    if not set(INPUT_NAMES) <= names or not set(REQUIRED_OUTPUTS) <= outputs:
        raise BackendError(f"{path}: an ONNX model but not a dettool deploy graph (inputs {sorted(names)}, "
                           f"expected {list(INPUT_NAMES)}); export one with dettool export --to onnx")
    side = sidecar_path(path)
    try:
        for prop in model.metadata_props:
            if prop.key == METADATA_KEY:
                return DeployMetadata.from_json(prop.value, str(path))
        if side.is_file():
            return DeployMetadata.from_json(side.read_text(encoding="utf-8"), str(side))
    except DataError as exc:
        raise BackendError(str(exc)) from None
    raise BackendError(f"{path}: an ONNX model but not a dettool deploy graph (no '{METADATA_KEY}' metadata, "
                       f"no sidecar {side.name}); export one with dettool export --to onnx")


def select_providers(providers: list[str] | None) -> list[str]:
    """The requested execution providers that this onnxruntime has (CPU always last).

    ``None``: CUDA when available, else CPU. A requested provider that is missing is dropped
    with a note (CUDA needs the ``onnxruntime-gpu`` package).
    """
    available = ort.get_available_providers()
    wanted = list(providers) if providers else [CUDA_PROVIDER, CPU_PROVIDER]
    missing = [p for p in wanted if p not in available]
    if providers and missing:
        hint = " (pip install onnxruntime-gpu)" if CUDA_PROVIDER in missing else ""
        note(f"onnxruntime has no {', '.join(missing)}{hint}; running on {CPU_PROVIDER}")
    chosen = [p for p in wanted if p in available and p != CPU_PROVIDER]
    return chosen + [CPU_PROVIDER]


class OnnxRuntimeBackend(Backend):
    """Run a dettool ONNX deploy graph in ONNX Runtime.

    Args:
        path: the ``.onnx`` file written by ``dettool export --to onnx``.
        providers: ONNX Runtime execution providers (default: CUDA when available, else CPU).
            dettool's custom ops always run on the CPU (onnxruntime-extensions Python ops).
        threads: intra-op threads (default: torch's thread count).
        spin: whether idle intra-op threads spin-wait (``ort_custom_ops.make_session``).

    Attributes:
        meta: the graph's ``DeployMetadata``.
        fixed_batch: the graph's batch size when it is fixed, else None (dynamic).
    """

    name = "onnxruntime"

    def __init__(self, path: str | Path, providers: list[str] | None = None, threads: int | None = None,
                 spin: bool = True) -> None:
        from dettool.runtime.ort_custom_ops import make_session

        self.path = Path(path)
        model = load_onnx_model(self.path)
        self.meta = read_deploy_metadata(model, self.path)
        self.providers = select_providers(providers)
        try:
            self.session = make_session(model, providers=self.providers, threads=threads, spin=spin)
        except DettoolError:
            raise
        except Exception as exc:  # ONNX Runtime rejects the graph (bad opset, broken node, ...)
            raise BackendError(f"{self.path}: ONNX Runtime cannot load this model: {_first_line(exc)}") from None
        del model
        self.output_names = [o.name for o in self.session.get_outputs()]
        inputs = {i.name: i for i in self.session.get_inputs()}
        batch = inputs["images"].shape[0]
        self.fixed_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.input_dtypes = {name: np.float16 if inputs[name].type == "tensor(float16)" else np.float32
                             for name in INPUT_NAMES}
        self._noted_batch = False

    def run(self, images: torch.Tensor, image_shapes: torch.Tensor) -> DetOutputs:
        """One session run: ``images [B, 3, H, W]``, ``image_shapes [B, 2]`` -> the graph's outputs."""
        feed = {"images": images.detach().cpu().numpy().astype(self.input_dtypes["images"], copy=False),
                "image_shapes": image_shapes.cpu().numpy().astype(self.input_dtypes["image_shapes"], copy=False)}
        try:
            values = self.session.run(self.output_names, feed)
        except Exception as exc:
            if type(exc).__module__.startswith("onnxruntime"):
                raise BackendError(f"{self.path}: ONNX Runtime failed on inputs {list(images.shape)}: "
                                   f"{_first_line(exc)}") from None
            raise
        out = {name: torch.from_numpy(v) for name, v in zip(self.output_names, values)}
        return DetOutputs(out["num_dets"], out["boxes"], out["scores"], out["labels"], out.get("masks"))

    def infer(self, images: torch.Tensor, metas: list[dict]) -> list[Detections]:
        """Detections of each image in original-image pixels (CPU tensors)."""
        num = images.shape[0]
        step = self.fixed_batch or max(num, 1)
        if self.fixed_batch and step != num and not self._noted_batch:
            self._noted_batch = True
            how = "one by one" if step == 1 else f"in batches of {step}"
            note(f"{self.path.name} has a fixed batch of {step} (exported without --dynamic-batch): "
                 f"running the {num} images of a batch {how}")
        return infer_in_pieces(self.run, images, metas, max_batch=step, min_batch=self.fixed_batch or 1,
                               mask_thr=self.meta.postprocess.mask_thr, mask_paste=self.meta.postprocess.mask_paste)
