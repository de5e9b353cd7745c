"""TensorRT fixtures: the dettool plugin library loaded into the process's TensorRT.

Every test here needs ``import tensorrt``, a CUDA device and libdettool_plugins.so (found as
exporters/trt_plugin_lib.py says: $DETTOOL_TRT_PLUGIN_LIB, <package>/lib, <repo>/build); each
missing piece skips with its reason.
"""
from __future__ import annotations

import ctypes
import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))  # dettool_trt_engine
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "plugins"))  # dettool_op_references

from dettool.exporters.trt_plugin_lib import PLUGIN_NAMES as PLUGINS  # noqa: E402


def registered(trt, name: str) -> bool:
    registry = trt.get_plugin_registry()
    getter = getattr(registry, "get_creator", None) or registry.get_plugin_creator
    return getter(name, "1", "dettool") is not None


@pytest.fixture(scope="session")
def plugin_library():
    """``(path, ctypes handle)`` of the plugin library, registered with TensorRT's registry."""
    trt = pytest.importorskip("tensorrt", reason="TensorRT is not installed")
    if not hasattr(trt, "Builder"):  # a folder named tensorrt on sys.path, not the library
        sys.modules.pop("tensorrt", None)
        pytest.skip("TensorRT is not installed")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    from dettool.exporters.trt_plugin_lib import find_plugin_library

    try:
        path = find_plugin_library()
    except FileNotFoundError as e:
        pytest.skip(f"plugin library not built: {str(e).splitlines()[0]}")
    handle = ctypes.CDLL(str(path))  # loading registers nothing
    handle.dettoolPluginBuildInfo.restype = ctypes.c_char_p
    handle.dettoolRegisterPlugins.restype = ctypes.c_int32
    if not all(registered(trt, name) for name in PLUGINS):
        # After `import tensorrt`: registers with the process's libnvinfer; runtime/tensorrt_env.py
        # then finds the creators registered and does not load the library a second time.
        assert handle.dettoolRegisterPlugins() >= 0, "dettoolRegisterPlugins() found no libnvinfer in the process"
    missing = [name for name in PLUGINS if not registered(trt, name)]
    assert not missing, f"not registered with TensorRT: {missing}"
    return path, handle


@pytest.fixture(scope="session")
def build_info(plugin_library) -> dict:
    return json.loads(plugin_library[1].dettoolPluginBuildInfo().decode())
