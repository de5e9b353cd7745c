"""ONNX deploy graph -> TensorRT engine (TensorRT 10 and 11), written as a dettool engine file.

FP16 engines come from the ``--fp16`` ONNX graph on both versions, built as a strongly typed
network whose types TensorRT follows (TensorRT 11 networks are always strongly typed: its
deprecated ``STRONGLY_TYPED`` creation flag is ignored and not set; TensorRT 10 gets the flag).
The FP32 regions of that graph (box decoding, proposal and detection selection, RoI
coordinates, NMS) therefore stay FP32. TensorRT 10's FP16 builder flag on an FP32 graph is not
offered: it lets TensorRT run those regions in FP16, and the saved graph no longer says which
nodes they are. dettool's plugin library is loaded before parsing: the parser maps each
``dettool`` node to the plugin of the same name (``plugin_namespace`` attribute).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import onnx

from dettool.config.schema import DeployConfig
from dettool.data.transforms import ScaleSpec, rescale_size
from dettool.errors import ExportError
from dettool.io import atomic_write_bytes, file_sha256
from dettool.runtime.engine_file import EngineHeader, write_engine
from dettool.runtime.metadata import METADATA_KEY, DeployMetadata, sidecar_path
from dettool.runtime.tensorrt_env import tensorrt_env


@dataclass(frozen=True)
class ShapeProfile:
    """One optimization profile: batch and padded (height, width) ranges of the ``images`` input."""

    min_batch: int
    opt_batch: int
    max_batch: int
    min_size: tuple[int, int]
    opt_size: tuple[int, int]
    max_size: tuple[int, int]

    def input_shapes(self, name: str) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """(min, opt, max) shapes of graph input ``name`` (``images`` or ``image_shapes``)."""
        batches = (self.min_batch, self.opt_batch, self.max_batch)
        if name == "image_shapes":
            return tuple((b, 2) for b in batches)
        sizes = (self.min_size, self.opt_size, self.max_size)
        return tuple((b, 3, h, w) for b, (h, w) in zip(batches, sizes))


def _round_up(v: int, d: int) -> int:
    return -(-v // d) * d


def profile_from_config(deploy: DeployConfig, test_scale: str, size_divisor: int, meta: DeployMetadata) -> ShapeProfile:
    """The profile ``deploy`` asks for, sizes derived from ``test_scale`` where not given.

    With keep-ratio (the graph's ``meta.preprocess.keep_ratio``) ``opt`` is a 4:3 landscape image
    at the test scale, ``max`` a square of the long side, ``min`` one ``size_divisor`` block;
    without, every image has the exact size ``WxH``, so all three are it (padded).
    A graph exported without ``--dynamic-batch`` has its batch fixed: every batch bound is that batch.
    (The batch bounds themselves are checked when the config is read.)
    """
    scale = ScaleSpec.parse(test_scale, "data.test_scale")
    if meta.preprocess.keep_ratio:
        w, h, _ = rescale_size(4 * scale.long, 3 * scale.long, scale.long, scale.shorts[-1])
        longest = _round_up(scale.long, size_divisor)
        opt = deploy.opt_size or (_round_up(h, size_divisor), _round_up(w, size_divisor))
        mx = deploy.max_size or (longest, longest)
        mn = deploy.min_size or (size_divisor, size_divisor)
    else:
        w, h = scale.exact_size()
        exact = (_round_up(h, size_divisor), _round_up(w, size_divisor))
        opt, mx, mn = deploy.opt_size or exact, deploy.max_size or exact, deploy.min_size or exact
    if meta.dynamic_batch:
        batches = (deploy.min_batch, deploy.opt_batch, deploy.max_batch)
    else:
        batches = (meta.export_batch,) * 3
    for key, size in (("min_size", mn), ("opt_size", opt), ("max_size", mx)):
        if size[0] % size_divisor or size[1] % size_divisor:
            raise ExportError(f"deploy.{key}: {list(size)} is not a multiple of data.size_divisor={size_divisor}")
    if not all(a <= b <= c for a, b, c in zip(mn, opt, mx)):
        raise ExportError(f"deploy: sizes min {list(mn)} <= opt {list(opt)} <= max {list(mx)} do not hold")
    return ShapeProfile(*batches, tuple(mn), tuple(opt), tuple(mx))


def read_onnx_metadata(onnx_path: Path) -> DeployMetadata:
    """The deploy metadata stored in an exported ONNX file (weights are not loaded)."""
    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # protobuf DecodeError and friends
        raise ExportError(f"{onnx_path}: not a readable ONNX model ({type(exc).__name__})") from None
    for prop in model.metadata_props:
        if prop.key == METADATA_KEY:
            return DeployMetadata.from_json(prop.value, str(onnx_path))
    if sidecar_path(onnx_path).is_file():
        return DeployMetadata.from_json(sidecar_path(onnx_path).read_text(), str(sidecar_path(onnx_path)))
    raise ExportError(f"{onnx_path}: not a dettool deploy graph (no '{METADATA_KEY}' metadata); export it with dettool")


def _gpu() -> tuple[str, str]:
    import torch

    if not torch.cuda.is_available():
        raise ExportError("building a TensorRT engine needs an NVIDIA GPU; torch sees none")
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}", torch.cuda.get_device_name()


def _network_flags(trt, strongly_typed: bool, tensorrt_major: int) -> int:
    """Network creation flags: ``STRONGLY_TYPED`` for a typed graph on TensorRT 10; none on 11,
    where every network is strongly typed and the flag is deprecated and ignored."""
    if not strongly_typed or tensorrt_major >= 11:
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        raise ExportError(f"TensorRT {trt.__version__} has no strongly typed networks; use TensorRT 10 or newer")
    return 1 << int(flag)


def build_engine(onnx_path: str | Path, engine_path: str | Path, profile: ShapeProfile, *,
                 workspace_mb: int = 4096, timing_cache: str | Path | None = None) -> EngineHeader:
    """Build and write the engine of an exported dettool ONNX graph; returns its header.

    Args:
        onnx_path: a graph written by ``dettool export --to onnx`` (``--fp16`` for FP16 engines).
        engine_path: the dettool engine file to write (atomically), plus its ``.json`` sidecar.
        profile: the optimization profile.
        workspace_mb: builder workspace limit.
        timing_cache: file read before and written after the build (speeds up rebuilds).
    """
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    if not onnx_path.is_file():
        raise ExportError(f"{onnx_path}: ONNX file not found")
    meta = read_onnx_metadata(onnx_path)
    env = tensorrt_env(require_plugins=bool(meta.custom_ops))
    trt = env.trt
    strongly_typed = meta.precision == "fp16" or env.major >= 11
    compute_capability, gpu_name = _gpu()

    builder = trt.Builder(env.logger)
    network = builder.create_network(_network_flags(trt, strongly_typed, env.major))
    parser = trt.OnnxParser(network, env.logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [parser.get_error(i).desc() for i in range(parser.num_errors)]
        raise ExportError(f"{onnx_path}: TensorRT's ONNX parser failed: {errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
    opt_profile = builder.create_optimization_profile()
    shapes = {}
    for i in range(network.num_inputs):
        name = network.get_input(i).name
        shapes[name] = profile.input_shapes(name)
        opt_profile.set_shape(name, *shapes[name])
    config.add_optimization_profile(opt_profile)
    cache_path = Path(timing_cache) if timing_cache else None
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path and cache_path.is_file() else b"")
    config.set_timing_cache(cache, False)

    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise ExportError(f"{onnx_path}: TensorRT could not build an engine (see the TensorRT log above)")
    if cache_path:
        atomic_write_bytes(bytes(config.get_timing_cache().serialize()), cache_path)
    header = EngineHeader(
        tensorrt_version=env.version, compute_capability=compute_capability, gpu_name=gpu_name,
        plugin_library_sha256=env.plugin_sha256,
        precision=meta.precision,
        strongly_typed=strongly_typed, profiles={k: {"min": list(v[0]), "opt": list(v[1]), "max": list(v[2])}
                                                 for k, v in shapes.items()},
        onnx_sha256=file_sha256(onnx_path), deploy=json.loads(meta.to_json()))
    write_engine(engine_path, header, bytes(plan))
    atomic_write_bytes(meta.to_json().encode(), sidecar_path(engine_path))
    return header
