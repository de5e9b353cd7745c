"""TensorRT set-up shared by the engine builder and the tensorrt backend.

Imports ``tensorrt`` (a one-line error saying what to install when it is missing), initialises
TensorRT's built-in plugins and registers dettool's plugin library (``plugins_trt/``; found by
``exporters.trt_plugin_lib.find_plugin_library``) with the plugin registry, once per process:

- a library built with another CUDA major version than TensorRT's or torch's is refused first
  (it links the CUDA runtime of the nvcc that built it);
- ``registry.load_library`` registers it, unless dettool's creators are in the registry already
  (e.g. a test fixture called ``dettoolRegisterPlugins()``): TensorRT's ``loadLibrary`` fails on a
  creator it already holds.
"""
from __future__ import annotations

import re
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


def cuda_major(version: str | int | None) -> int | None:
    """The major of a CUDA version: ``"13.0.48"`` or ``"12.8"`` -> 13 or 12; ``None`` when unknown."""
    match = re.match(r"\s*(\d+)", str(version)) if version not in (None, "") else None
    return int(match.group(1)) if match else None


def tensorrt_cuda_version(distribution_names: list[str] | None = None) -> str | None:
    """The CUDA major version the installed TensorRT is built for, as a string, or ``None`` when
    unknown. The ``tensorrt`` module does not say; its pip distributions do in their names
    (``tensorrt-cu12``, ``tensorrt_cu13_bindings``, ...). A tar or deb install has no such name.

    Args:
        distribution_names: the distributions providing the ``tensorrt`` module (default: asked
            from ``importlib.metadata``).
    """
    if distribution_names is None:
        from importlib.metadata import packages_distributions

        distribution_names = packages_distributions().get("tensorrt", [])
    majors = {m.group(1) for name in distribution_names if (m := re.search(r"cu(\d+)", name.lower()))}
    return majors.pop() if len(majors) == 1 else None


def check_cuda_versions(library: Path | str, build_cuda: str | None, tensorrt_cuda: str | None,
                        torch_cuda: str | None) -> None:
    """Refuse a plugin library built with another CUDA major version than TensorRT's or torch's.

    Args:
        library: the library's path (for the message).
        build_cuda: the CUDA version of the nvcc that built it (``dettoolPluginBuildInfo``).
        tensorrt_cuda, torch_cuda: the CUDA versions TensorRT and torch are built for; ``None``
            where unknown, that half is not checked.

    Raises:
        BackendError: one line naming the versions and what to rebuild.
    """
    built = cuda_major(build_cuda)
    others = {what: cuda_major(v) for what, v in (("TensorRT", tensorrt_cuda), ("torch", torch_cuda))}
    others = {what: major for what, major in others.items() if major is not None}
    wrong = {what: major for what, major in others.items() if major != built}
    if built is None or not wrong:
        return
    found = " and ".join(f"{what} is built for CUDA {major}" for what, major in others.items())
    wanted = set(others.values())
    if len(wanted) == 1:
        fix = (f"rebuild the plugin library with a CUDA {wanted.pop()} toolkit (nvcc) and the TensorRT headers "
               f"(cmake -S . -B build -DTensorRT_ROOT=... && cmake --build build && cmake --install build)")
    else:
        fix = "install a TensorRT and a torch built for one CUDA version, then rebuild the plugin library with it"
    raise BackendError(f"{library}: dettool's plugin library was built with CUDA {build_cuda} (major {built}), but "
                       f"{found}; {fix}")


def _registered(registry, name: str) -> bool:
    from dettool.exporters.trt_plugin_lib import PLUGIN_NAMESPACE, PLUGIN_VERSION

    getter = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    return getter(name, PLUGIN_VERSION, PLUGIN_NAMESPACE) is not None


def register_plugin_library(trt: ModuleType, library: Path) -> None:
    """Register dettool's creators with TensorRT's registry, once.

    ``load_library`` only when none is registered yet: TensorRT refuses a library whose creators it
    already holds (registered by ``dettoolRegisterPlugins()`` of a ctypes-loaded copy, or an earlier
    ``load_library``).

    Raises:
        BackendError: only some of dettool's creators are registered, or TensorRT cannot load the library.
    """
    from dettool.exporters.trt_plugin_lib import PLUGIN_NAMES

    registry = trt.get_plugin_registry()
    present = [name for name in PLUGIN_NAMES if _registered(registry, name)]
    if len(present) == len(PLUGIN_NAMES):
        return
    if present:
        missing = [name for name in PLUGIN_NAMES if name not in present]
        raise BackendError(f"{library}: TensorRT's registry holds {', '.join(present)} but not {', '.join(missing)} "
                           f"(another dettool plugin library registered in this process?); use one library")
    if registry.load_library(str(library)) is None:
        raise BackendError(f"{library}: TensorRT could not load this plugin library (built for another "
                           f"TensorRT? this is TensorRT {trt.__version__})")


def tensorrt_env(require_plugins: bool = True) -> TensorRTEnv:
    """TensorRT with its built-in plugins and dettool's plugin library registered (cached).

    ``require_plugins``: a missing dettool plugin library is an error (graphs with dettool ops
    cannot be parsed without it); otherwise it is skipped.
    """
    global _ENV
    if _ENV is not None and (_ENV.plugin_library is not None or not require_plugins):
        return _ENV
    trt = import_tensorrt()
    from dettool.exporters.trt_plugin_lib import find_plugin_library, plugin_build_info, plugin_library_hash

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
        try:
            info = plugin_build_info(library)
        except (OSError, ValueError) as exc:
            raise BackendError(f"{library}: not a loadable dettool plugin library ({exc})") from None
        import torch

        build_cuda = info.get("cuda_version") or None
        if build_cuda is None and info.get("cudart_api_version"):  # CUDART_VERSION: 1000 * major + 10 * minor
            build_cuda = str(int(info["cudart_api_version"]) // 1000)
        check_cuda_versions(library, build_cuda, tensorrt_cuda_version(), torch.version.cuda)
        register_plugin_library(trt, library)
        sha = plugin_library_hash(library)
    _ENV = TensorRTEnv(trt, logger, library, sha)
    return _ENV
