"""What ``dettool export`` does: a checkpoint to an ONNX deploy graph, or on to a TensorRT engine.

``--to onnx`` is ``torch2onnx.export_onnx``; ``--to tensorrt`` exports the ONNX graph beside the
engine (``<engine stem>.onnx``, FP16 when the engine is) and builds the engine from it with
``onnx2trt.build_engine``. TensorRT is checked for before the minute-long ONNX export.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

from dettool.config.schema import Config
from dettool.errors import ExportError

TARGETS = ("onnx", "tensorrt")
SUFFIXES = {"onnx": ".onnx", "tensorrt": ".engine"}


def default_output(cfg: Config, to: str, portable: bool = False, fp16: bool = False) -> Path:
    """``<work_dir>/deploy/<config stem>[_portable][_fp16].onnx`` (``.engine`` for TensorRT)."""
    stem = Path(cfg.source).stem if cfg.source else "model"
    work_dir = Path(cfg.work_dir or Path("work_dirs") / stem)
    return work_dir / "deploy" / f"{stem}{'_portable' if portable else ''}{'_fp16' if fp16 else ''}{SUFFIXES[to]}"


def _size_mb(path: Path) -> str:
    return f"{path.stat().st_size / 2**20:.1f} MB"


def _require_tensorrt() -> None:
    """One-line errors, before any work, when TensorRT or dettool's engine builder is missing."""
    from dettool.runtime import TENSORRT_HINT, tensorrt_installed

    if not tensorrt_installed():
        raise ExportError(TENSORRT_HINT.replace("; or run the ONNX model with --backend onnxruntime",
                                                "; or export with --to onnx"))
    if importlib.util.find_spec("dettool.exporters.onnx2trt") is None:
        raise ExportError("the TensorRT engine builder (dettool.exporters.onnx2trt) is not part of this dettool "
                          "install; export with --to onnx")


def export_deploy(cfg: Config, checkpoint: str | Path, to: str, out: str | Path | None = None, *,
                  fp16: bool = False, portable: bool = False, dynamic_batch: bool = False, batch: int = 1,
                  log: Callable[[str], None] = print) -> Path:
    """Export ``checkpoint`` of ``cfg``'s model; returns the written file.

    Args:
        to: ``onnx`` or ``tensorrt``.
        out: the file to write (default :func:`default_output`); ``.onnx`` / ``.engine``.
        fp16, portable, dynamic_batch, batch: as ``export_onnx`` (TensorRT builds from that graph).
        log: progress and summary lines.
    """
    if to not in TARGETS:
        raise ExportError(f"--to {to}: choose one of {', '.join(TARGETS)}")
    out = Path(out) if out else default_output(cfg, to, portable, fp16)
    if out.suffix != SUFFIXES[to]:
        raise ExportError(f"{out}: the output of --to {to} must end in {SUFFIXES[to]}")
    if to == "tensorrt":
        _require_tensorrt()
    from dettool.exporters.torch2onnx import export_onnx

    onnx_path = out.with_suffix(".onnx")
    log(f"dettool: exporting {cfg.source or 'the model'} ({checkpoint}) to ONNX: tracing the deploy graph "
        f"(a minute or two on a CPU) ...")
    onnx_path, meta = export_onnx(cfg, checkpoint, onnx_path, fp16=fp16, portable=portable,
                                  dynamic_batch=dynamic_batch, batch=batch)
    from dettool.runtime.metadata import sidecar_path

    ops = ", ".join(meta.custom_ops) if meta.custom_ops else "none (portable)"
    batch_text = "dynamic" if meta.dynamic_batch else f"fixed at {meta.export_batch}"
    log(f"dettool: wrote {onnx_path} ({_size_mb(onnx_path)}; {meta.model_type}, opset {meta.opset}, {meta.precision}, "
        f"batch {batch_text}; custom ops: {ops}) and its metadata sidecar {sidecar_path(onnx_path)}")
    if to == "onnx":
        return onnx_path
    from dettool.exporters.onnx2trt import build_engine, profile_from_config

    d = cfg.deploy
    profile = profile_from_config(d, cfg.data.test_scale, cfg.data.size_divisor, meta)
    log(f"dettool: building the TensorRT engine {out} (batch {profile.min_batch}-{profile.max_batch}, padded size "
        f"{list(profile.min_size)}-{list(profile.max_size)}; minutes on a first build) ...")
    cache = d.timing_cache or out.with_name("timing.cache")  # reused by later builds on this GPU
    header = build_engine(onnx_path, out, profile, workspace_mb=d.workspace_mb, timing_cache=cache)
    log(f"dettool: wrote {out} ({_size_mb(out)}; TensorRT {header.tensorrt_version}, {header.precision}, "
        f"GPU {header.gpu_name}) and its metadata sidecar {sidecar_path(out)}")
    return out
