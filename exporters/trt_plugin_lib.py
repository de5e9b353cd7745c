"""Where dettool finds ``libdettool_plugins.so`` (its TensorRT plugins), and its fingerprint.

Search order (also in plugins_trt/README.md), first hit wins:

1. ``$DETTOOL_TRT_PLUGIN_LIB``: the library's path. When set it must exist: a wrong explicit path
   is an error, never silently replaced by another library.
2. ``<dettool package>/lib/libdettool_plugins.so``: where ``cmake --install build`` puts it
   (the ``dettool`` folder that ``import dettool`` loads).
3. ``<repository>/build/libdettool_plugins.so``: a build tree beside the sources
   (``cmake -S . -B build && cmake --build build``), for an editable install.

Registering the library with TensorRT is the loader's job (runtime/tensorrt_env.py); this module
finds it, fingerprints it, so that an engine's metadata can record which plugin binary it was
built with, and reads what it was built with (``plugin_build_info``).
"""
from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import dettool
from dettool.io import file_sha256

PLUGIN_LIBRARY_NAME = "libdettool_plugins.so"
PLUGIN_LIBRARY_ENV = "DETTOOL_TRT_PLUGIN_LIB"
# The creators the library registers (plugins_trt/README.md): names, one version, one namespace.
PLUGIN_NAMES = ("DettoolBatchedNMS", "DettoolMultiLevelRoIAlign", "DettoolModulatedDeformConv", "DettoolPSRoIAlign")
PLUGIN_VERSION = "1"
PLUGIN_NAMESPACE = "dettool"


def plugin_library_candidates() -> list[Path]:
    """The paths searched after ``$DETTOOL_TRT_PLUGIN_LIB``, in order."""
    package = Path(dettool.__file__).resolve().parent
    candidates = [package / "lib" / PLUGIN_LIBRARY_NAME]
    repo = package.parent
    if (repo / "CMakeLists.txt").is_file() and (repo / "plugins_trt").is_dir():  # a source checkout
        candidates.append(repo / "build" / PLUGIN_LIBRARY_NAME)
    return candidates


def find_plugin_library() -> Path:
    """The plugin library to load.

    Returns: its absolute path.

    Raises:
        FileNotFoundError: ``$DETTOOL_TRT_PLUGIN_LIB`` names no file, or no candidate exists
            (the message lists what was searched).
    """
    explicit = os.environ.get(PLUGIN_LIBRARY_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{PLUGIN_LIBRARY_ENV}={explicit} is not a file")
        return path.resolve()
    candidates = plugin_library_candidates()
    for path in candidates:
        if path.is_file():
            return path.resolve()
    searched = "\n  ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"{PLUGIN_LIBRARY_NAME} not found; set {PLUGIN_LIBRARY_ENV} or build it "
        f"(cmake -S . -B build -DTensorRT_ROOT=... && cmake --build build && cmake --install build). "
        f"Searched:\n  {searched}")


def plugin_library_hash(path: Path | str) -> str:
    """sha256 of the library file, hex: identifies the exact plugin binary an engine was built with."""
    return file_sha256(path)


def plugin_build_info(path: Path | str) -> dict:
    """What the library was built with: ``dettoolPluginBuildInfo()``'s JSON (plugin names,
    TensorRT headers' ``tensorrt_version``, ``cuda_version`` of nvcc, ``cudart_api_version``, GPU
    architectures, compiler).

    Loads the library into the process (``ctypes``); loading registers nothing with TensorRT.

    Raises:
        OSError: the file is not a loadable library.
        ValueError: it has no ``dettoolPluginBuildInfo`` or its answer is not JSON.
    """
    library = ctypes.CDLL(str(path))
    try:
        build_info = library.dettoolPluginBuildInfo
    except AttributeError:
        raise ValueError(f"{path}: no dettoolPluginBuildInfo(); not dettool's plugin library") from None
    build_info.restype = ctypes.c_char_p
    build_info.argtypes = []
    try:
        return json.loads(build_info().decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: dettoolPluginBuildInfo() is not JSON ({exc})") from None
