"""TensorRT set-up shared by the engine builder and the tensorrt backend.

Imports ``tensorrt`` (a one-line error saying what to install when it is missing), initialises
TensorRT's built-in plugins and loads dettool's plugin library (``plugins_trt/``; found by
``exporters.trt_plugin_lib.find_plugin_library``) into the plugin registry, once per process.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from dettool.errors import BackendError

INSTALL_HINT = ("TensorRT is not installed: install it with `pip install tensorrt` on a machine with an NVIDIA GPU "
                "and CUDA (see NVIDIA's TensorRT installation guide), then build dettool's plugin library with "
                "`cmake -B build -DTensorRT_ROOT=<TensorRT dir> && cmake --build build && cmake --install build`")


@dataclass(frozen=True)
class TensorRTEnv:
    """A ready TensorRT: the module, a logger, and the dettool plugin library loaded (path and sha256)."""

    trt: ModuleType
    logger: object
    plugin_library: Path | None
    plugin_sha256: str

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    @property
    def major(self) -> int:
        return int(self.version.split(".")[0])


_ENV: TensorRTEnv | None = None


def import_tensorrt() -> ModuleType:
    try:
        import tensorrt
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    if not hasattr(tensorrt, "Builder"):  # a folder named tensorrt on sys.path, not the library
        raise BackendError(f"{INSTALL_HINT} ('tensorrt' imported from {getattr(tensorrt, '__path__', '?')} is not it)")
    return tensorrt


def tensorrt_env(require_plugins: bool = True) -> TensorRTEnv:
    """TensorRT with its built-in plugins and dettool's plugin library registered (cached).

    ``require_plugins``: a missing dettool plugin library is an error (graphs with dettool ops
    cannot be parsed without it); otherwise it is skipped.
    """
    global _ENV
    if _ENV is not None and (_ENV.plugin_library is not None or not require_plugins):
        return _ENV
    trt = import_tensorrt()
    from dettool.exporters.trt_plugin_lib import find_plugin_library, plugin_library_hash

    logger = _ENV.logger if _ENV is not None else trt.Logger(trt.Logger.WARNING)
    trt.init_libnvinfer_plugins(logger, "")
    try:
        library = find_plugin_library()
    except Exception as exc:  # the finder names the places it looked
        if require_plugins:
            raise BackendError(f"dettool's TensorRT plugin library was not found ({exc})") from None
        library = None
    sha = ""
    if library is not None:
        handle = trt.get_plugin_registry().load_library(str(library))
        if handle is None:
            raise BackendError(f"{library}: TensorRT could not load this plugin library (built for another "
                               f"TensorRT or CUDA? this is TensorRT {trt.__version__})")
        sha = plugin_library_hash(library)
    _ENV = TensorRTEnv(trt, logger, library, sha)
    return _ENV
