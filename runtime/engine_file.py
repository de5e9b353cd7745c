"""dettool's TensorRT engine file: a header saying what the engine was built with, then the plan.

A serialized TensorRT plan only runs with the TensorRT version and GPU architecture it was built
for, and with the same plugin library. The header records them, and the deploy metadata, so a
mismatch is refused with a message that says why instead of a crash inside TensorRT.

Layout: ``MAGIC`` (8 bytes), format version (uint32 LE), header length (uint64 LE), the header
(UTF-8 JSON), the plan bytes.
"""
from __future__ import annotations

import json
import struct
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dettool.errors import BackendError
from dettool.io import atomic_write_bytes
from dettool.runtime.metadata import DeployMetadata

MAGIC = b"DTTRTENG"
VERSION = 1
_PREFIX = struct.Struct("<8sIQ")


@dataclass(frozen=True)
class EngineHeader:
    """What an engine was built with.

    Attributes:
        tensorrt_version: ``tensorrt.__version__`` at build time.
        compute_capability: ``"major.minor"`` of the GPU it was built on.
        gpu_name: that GPU's name (informative).
        plugin_library_sha256: sha256 of the dettool plugin library loaded at build time ("" if none).
        precision: ``fp16`` or ``fp32``.
        strongly_typed: built as a strongly typed network (types from the ONNX graph).
        profiles: per input, ``{"min": [...], "opt": [...], "max": [...]}``.
        onnx_sha256: sha256 of the ONNX file the engine was built from.
        deploy: the ONNX graph's deploy metadata (as a dict).
    """

    tensorrt_version: str
    compute_capability: str
    gpu_name: str
    plugin_library_sha256: str
    precision: str
    strongly_typed: bool
    profiles: dict
    onnx_sha256: str
    deploy: dict = field(default_factory=dict)

    def metadata(self, origin: str) -> DeployMetadata:
        return DeployMetadata.from_json(json.dumps(self.deploy), origin)


def write_engine(path: str | Path, header: EngineHeader, plan: bytes) -> None:
    """Write header and plan to ``path`` atomically."""
    text = json.dumps(asdict(header)).encode("utf-8")
    atomic_write_bytes(_PREFIX.pack(MAGIC, VERSION, len(text)) + text + bytes(plan), path)


def is_engine_file(path: str | Path) -> bool:
    """Whether ``path`` starts like a dettool engine file."""
    try:
        with open(path, "rb") as f:
            return f.read(len(MAGIC)) == MAGIC
    except OSError:
        return False


def read_engine(path: str | Path) -> tuple[EngineHeader, bytes]:
    """Header and plan of a dettool engine file; ``BackendError`` names the file when it is not one."""
    path = Path(path)
    if not path.is_file():
        raise BackendError(f"{path}: engine file not found")
    data = path.read_bytes()
    if len(data) < _PREFIX.size or data[: len(MAGIC)] != MAGIC:
        hint = " (an ONNX model? use --backend onnxruntime)" if data[:1] == b"\x08" else ""
        raise BackendError(f"{path}: not a dettool TensorRT engine file{hint}; build one with "
                           "dettool export --to tensorrt")
    _, version, size = _PREFIX.unpack_from(data)
    if version != VERSION:
        raise BackendError(f"{path}: engine file format {version} is not {VERSION}; rebuild it with this dettool")
    end = _PREFIX.size + size
    try:
        header = EngineHeader(**json.loads(data[_PREFIX.size:end].decode("utf-8")))
    except (ValueError, TypeError) as exc:
        raise BackendError(f"{path}: corrupt engine header ({exc})") from None
    if end >= len(data):
        raise BackendError(f"{path}: the engine plan is missing (truncated file)")
    return header, data[end:]


def check_compatible(header: EngineHeader, path: str | Path, tensorrt_version: str, compute_capability: str,
                     plugin_sha256: str) -> None:
    """Refuse an engine built for another TensorRT, GPU architecture or plugin library, saying which."""
    rebuild = "; rebuild it here with dettool export --to tensorrt"
    if header.tensorrt_version != tensorrt_version:
        raise BackendError(f"{path}: built with TensorRT {header.tensorrt_version}, this is TensorRT "
                           f"{tensorrt_version}{rebuild}")
    if header.compute_capability != compute_capability:
        raise BackendError(f"{path}: built for GPU compute capability {header.compute_capability} "
                           f"({header.gpu_name}), this GPU is {compute_capability}{rebuild}")
    if header.plugin_library_sha256 and header.plugin_library_sha256 != plugin_sha256:
        loaded = plugin_sha256[:12] or "none"
        raise BackendError(f"{path}: built with another dettool plugin library (sha256 "
                           f"{header.plugin_library_sha256[:12]}..., loaded {loaded}...){rebuild}")
