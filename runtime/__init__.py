"""dettool.runtime: inference backends (torch, onnxruntime, tensorrt) behind one interface, and
``Detector``, the object an application imports (``runtime/detector.py``).

``TorchBackend`` runs the trained model eagerly (``runtime/torch_backend.py``); exported files
are opened with :func:`load_backend`, which imports each engine backend only when it is asked for.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from dettool.errors import BackendError
from dettool.runtime.tensorrt_env import INSTALL_HINT

ENGINE_BACKENDS = ("onnxruntime", "tensorrt")
TENSORRT_HINT = INSTALL_HINT + "; or run the ONNX model with --backend onnxruntime"


def tensorrt_installed() -> bool:
    """Whether the ``tensorrt`` package can be imported (a bare ``tensorrt/`` folder on the path
    would import as a namespace package, not TensorRT)."""
    spec = importlib.util.find_spec("tensorrt")
    return spec is not None and spec.origin is not None


def _ort_providers(device: str | None) -> list[str] | None:
    if device is None:
        return None
    if str(device).startswith("cuda"):
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def load_backend(name: str, path: str | Path, device: str | None = None, *, providers: list[str] | None = None,
                 threads: int | None = None, spin: bool = True):
    """The ``Backend`` running exported file ``path``.

    Args:
        name: ``onnxruntime`` (an ``.onnx`` deploy graph) or ``tensorrt`` (a dettool engine file).
        path: the exported file.
        device: ``cpu`` / ``cuda`` (onnxruntime: the execution provider, default CUDA when
            available; tensorrt: the CUDA device, default ``cuda``).
        providers: onnxruntime execution providers (overrides ``device``).
        threads: onnxruntime intra-op threads (default: torch's thread count).
        spin: whether onnxruntime's idle intra-op threads spin-wait for the next run.

    Returns: an ``OnnxRuntimeBackend`` or a ``TensorRTBackend``; both carry the deploy metadata as ``meta``.
    ``BackendError`` (one line) for an unknown backend, a missing file or a missing TensorRT.
    """
    if name == "onnxruntime":
        from dettool.runtime.onnxruntime_backend import OnnxRuntimeBackend

        return OnnxRuntimeBackend(path, providers=list(providers) if providers else _ort_providers(device),
                                  threads=threads, spin=spin)
    if name == "tensorrt":
        if not Path(path).is_file():
            raise BackendError(f"{path}: engine file not found")
        if not tensorrt_installed():
            raise BackendError(TENSORRT_HINT)
        try:
            from dettool.runtime.tensorrt_backend import TensorRTBackend
        except ModuleNotFoundError as exc:
            if exc.name == "tensorrt":
                raise BackendError(TENSORRT_HINT) from None
            raise BackendError(f"the tensorrt backend is not part of this dettool install ({exc})") from None
        return TensorRTBackend(path, device or "cuda")
    raise BackendError(f"--backend {name}: unknown backend; choose one of {', '.join(ENGINE_BACKENDS)}")


def __getattr__(name: str):
    if name in ("Detector", "DetectionResult"):  # imported on use: it pulls in the data pipeline
        from dettool.runtime import detector

        return getattr(detector, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
