"""Trained checkpoint -> ONNX deploy graph (custom-op or portable, FP32 or FP16), checked and labelled.

``export_onnx`` builds the config's model, loads the checkpoint, wraps it into its deploy graph
(``exporters.deploy``), traces it with ``torch.onnx.export(dynamo=True)`` (dettool ops become
``dettool``-domain nodes, or standard ONNX ops with ``portable``), converts it to FP16 on request,
stores the deploy metadata, runs ``onnx.checker`` (full check) and writes the file atomically.
"""
from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import onnx
import torch

import dettool
from dettool.config.schema import Config
from dettool.data.transforms import ScaleSpec, rescale_size
from dettool.errors import ExportError
from dettool.exporters.deploy.detector import INPUT_NAMES, DeployDetector, build_deploy_model
from dettool.io import atomic_write_bytes, file_sha256
from dettool.runtime.metadata import METADATA_KEY, DeployMetadata, Postprocess, Preprocess, sidecar_path

OPSET = 19
IR_VERSION = 10  # onnx 1.23 writes IR 14 by default, which ONNX Runtime rejects


def example_inputs(cfg: Config, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[batch, 3, H, W]`` at the config's test scale (padded) and their ``image_shapes``:
    a 4:3 landscape image resized with keep-ratio, or the exact ``WxH`` without (``data.keep_ratio``)."""
    scale = ScaleSpec.parse(cfg.data.test_scale, "data.test_scale")
    if cfg.data.keep_ratio:
        w, h, _ = rescale_size(4 * scale.long, 3 * scale.long, scale.long, scale.shorts[-1])  # a 4:3 landscape image
    else:
        w, h = scale.exact_size()
    d = cfg.data.size_divisor
    ph, pw = -(-h // d) * d, -(-w // d) * d
    images = torch.randn(batch, 3, ph, pw, generator=torch.Generator().manual_seed(0))
    return images, torch.tensor([[float(h), float(w)]] * batch)


def dynamic_shapes(dynamic_batch: bool, size_divisor: int) -> tuple[dict, dict]:
    """Symbolic H and W (multiples of ``size_divisor``) always; the batch when ``dynamic_batch``."""
    h = torch.export.Dim("height_blocks", min=1, max=8192 // size_divisor)
    w = torch.export.Dim("width_blocks", min=1, max=8192 // size_divisor)
    images = {2: size_divisor * h, 3: size_divisor * w}
    shapes = {}
    if dynamic_batch:
        batch = torch.export.Dim("batch", min=1, max=256)
        images[0], shapes[0] = batch, batch
    return images, shapes


def trace_to_onnx(deploy: DeployDetector, inputs: tuple[torch.Tensor, torch.Tensor], portable: bool,
                  dynamic_batch: bool, size_divisor: int) -> onnx.ModelProto:
    """``torch.onnx.export(dynamo=True)`` of a deploy graph; ``ExportError`` names what could not be exported."""
    from dettool.exporters.onnx_ops import translation_table
    from dettool.exporters.onnx_schemas import register_dettool_schemas

    register_dettool_schemas()
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                deploy, inputs, dynamo=True, opset_version=OPSET, input_names=list(INPUT_NAMES),
                output_names=list(deploy.output_names), dynamic_shapes=dynamic_shapes(dynamic_batch, size_divisor),
                custom_translation_table=translation_table(portable), optimize=True, verbose=False)
    except Exception as exc:  # torch.export / translation failures: name the first offending op
        raise ExportError(f"{deploy.model_type}: the deploy graph could not be exported to ONNX: "
                          f"{_first_line(exc)}") from None
    model = program.model_proto
    model.ir_version = IR_VERSION
    return model


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    for ln in lines:
        if "Error" in ln or "not supported" in ln or "Unsupported" in ln:
            return ln[:300]
    return (lines[0] if lines else type(exc).__name__)[:300]


def strip_node_metadata(model: onnx.ModelProto) -> None:
    """Drop the exporter's per-node debug properties (stack traces, FX nodes): they triple the file size."""
    for node in model.graph.node:
        del node.metadata_props[:]


def custom_ops_of(model: onnx.ModelProto) -> tuple[str, ...]:
    return tuple(sorted({n.op_type for n in model.graph.node if n.domain == "dettool"}))


def build_metadata(cfg: Config, deploy: DeployDetector, class_names: list[str], cat_ids: list[int], *,
                   portable: bool, fp16: bool, dynamic_batch: bool, batch: int, custom_ops: tuple[str, ...],
                   checkpoint: str | Path) -> DeployMetadata:
    return DeployMetadata(
        model_type=deploy.model_type, class_names=tuple(class_names), cat_ids=tuple(int(c) for c in cat_ids),
        preprocess=Preprocess.of_config(cfg), postprocess=Postprocess.of_config(cfg),
        with_masks=deploy.with_masks, flavour="portable" if portable else "custom",
        precision="fp16" if fp16 else "fp32", opset=OPSET, custom_ops=custom_ops, dynamic_batch=dynamic_batch,
        export_batch=batch, dettool_version=dettool.__version__, source_config=cfg.source,
        source_checkpoint=str(checkpoint), checkpoint_sha256=file_sha256(checkpoint))


def save_model(model: onnx.ModelProto, out: Path, meta: DeployMetadata) -> None:
    """Write the model (metadata in ``metadata_props``) and its sidecar JSON, each atomically."""
    entry = onnx.StringStringEntryProto(key=METADATA_KEY, value=meta.to_json())
    kept = [p for p in model.metadata_props if p.key != METADATA_KEY]
    del model.metadata_props[:]
    model.metadata_props.extend(kept + [entry])
    atomic_write_bytes(model.SerializeToString(), out)
    atomic_write_bytes(meta.to_json().encode(), sidecar_path(out))


def check_model(path: Path) -> None:
    """``onnx.checker`` full check (types and shapes); ``ExportError`` on failure."""
    from dettool.exporters.onnx_schemas import register_dettool_schemas

    register_dettool_schemas()
    try:
        onnx.checker.check_model(str(path), full_check=True)
    except Exception as exc:  # onnx raises ValidationError / InferenceError
        raise ExportError(f"{path}: the written model fails onnx.checker: {_first_line(exc)}") from None


def export_onnx(cfg: Config, checkpoint: str | Path, out: str | Path, *, fp16: bool = False, portable: bool = False,
                dynamic_batch: bool = False, batch: int = 1) -> tuple[Path, DeployMetadata]:
    """Export ``checkpoint`` of ``cfg``'s model to ``out`` (ONNX opset 19); returns the path and metadata."""
    from dettool.trainer.checkpoint import checkpoint_classes, load_checkpoint
    from dettool.trainer.evaluate import load_trained_model

    out = Path(out)
    if out.suffix != ".onnx":
        raise ExportError(f"{out}: the output of --to onnx must end in .onnx")
    if batch < 1:
        raise ExportError(f"--batch-size {batch}: must be at least 1")
    model = load_trained_model(cfg, checkpoint, torch.device("cpu"))
    class_names, cat_ids = checkpoint_classes(load_checkpoint(checkpoint), cfg.model.num_classes,
                                              cfg.data.category_ids)
    deploy = build_deploy_model(model)
    # torch.export specialises a dimension whose example size is 1: trace a dynamic batch with 2.
    inputs = example_inputs(cfg, max(batch, 2) if dynamic_batch else batch)
    onnx_model = trace_to_onnx(deploy, inputs, portable, dynamic_batch, cfg.data.size_divisor)
    if fp16:
        from dettool.exporters.fp16 import convert_to_fp16

        onnx_model = convert_to_fp16(onnx_model)
    strip_node_metadata(onnx_model)
    meta = build_metadata(cfg, deploy, class_names, cat_ids, portable=portable, fp16=fp16, dynamic_batch=dynamic_batch,
                          batch=batch, custom_ops=custom_ops_of(onnx_model), checkpoint=checkpoint)
    save_model(onnx_model, out, meta)
    check_model(out)
    return out, meta
