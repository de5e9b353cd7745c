"""Engine building around TensorRT: profiles from the config, the engine file, version checks,
network flags, loading the plugin library.

TensorRT itself is absent here; what runs without it is tested here (with fakes of the
``tensorrt`` module where needed), the engine build itself in tests/trt_engines (marked
``tensorrt``).
"""
from __future__ import annotations

import importlib
import json
import types
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from dettool.config.schema import DeployConfig, Invalid
from dettool.errors import BackendError, ExportError
from dettool.exporters.onnx2trt import _network_flags, profile_from_config
from dettool.exporters.trt_plugin_lib import PLUGIN_NAMES
from dettool.runtime.engine_file import EngineHeader, check_compatible, is_engine_file, read_engine, write_engine
from dettool.runtime.metadata import DeployMetadata, Postprocess, Preprocess
from dettool.runtime.tensorrt_env import check_cuda_versions, tensorrt_cuda_version

META = DeployMetadata(model_type="faster_rcnn", class_names=("a", "b"), cat_ids=(1, 2),
                      preprocess=Preprocess("1333x800", (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), 32),
                      postprocess=Postprocess(0.05, 0.5, 100), with_masks=False, flavour="custom", precision="fp16",
                      opset=19, custom_ops=("DettoolBatchedNMS",), dynamic_batch=True, export_batch=2,
                      dettool_version="0.1.0")


def header(**kw) -> EngineHeader:
    base = dict(tensorrt_version="10.8.0", compute_capability="9.0", gpu_name="H100", plugin_library_sha256="ab" * 32,
                precision="fp16", strongly_typed=True, profiles={}, onnx_sha256="cd" * 32,
                deploy=json.loads(META.to_json()))
    base.update(kw)
    return EngineHeader(**base)


def test_profile_derived_from_test_scale():
    p = profile_from_config(DeployConfig(max_batch=4), "1333x800", 32, META)
    assert (p.min_batch, p.opt_batch, p.max_batch) == (1, 1, 4)
    assert p.opt_size == (800, 1088)  # a 4:3 image at 1333x800 is 1067 x 800, padded to 1088 x 800
    assert p.max_size == (1344, 1344) and p.min_size == (32, 32)
    assert p.input_shapes("images") == ((1, 3, 32, 32), (1, 3, 800, 1088), (4, 3, 1344, 1344))
    assert p.input_shapes("image_shapes") == ((1, 2), (1, 2), (4, 2))


def test_fixed_batch_graph_pins_the_profile_batch():
    p = profile_from_config(DeployConfig(max_batch=8), "256x208", 32, replace(META, dynamic_batch=False,
                                                                              export_batch=1))
    assert (p.min_batch, p.opt_batch, p.max_batch) == (1, 1, 1)


@pytest.mark.parametrize("deploy,match", [(DeployConfig(max_size=(1000, 1344)), "deploy.max_size"),
                                          (DeployConfig(opt_size=(2048, 2048)), "sizes min")])
def test_bad_profiles_name_the_key(deploy, match):
    with pytest.raises(ExportError, match=match):
        profile_from_config(deploy, "1333x800", 32, META)


def test_batch_bounds_are_checked_with_the_config():
    with pytest.raises(Invalid, match="min_batch <= opt_batch <= max_batch"):
        DeployConfig(min_batch=4, opt_batch=2)


def test_engine_file_round_trip(tmp_path: Path):
    path = tmp_path / "model.engine"
    write_engine(path, header(), b"PLAN-BYTES")
    assert is_engine_file(path)
    h, plan = read_engine(path)
    assert plan == b"PLAN-BYTES" and h == header()
    assert h.metadata(str(path)) == META


def test_engine_file_errors(tmp_path: Path):
    onnx_like = tmp_path / "model.onnx"
    onnx_like.write_bytes(b"\x08\x0a\x12\x07pytorch")
    with pytest.raises(BackendError, match="an ONNX model\\? use --backend onnxruntime"):
        read_engine(onnx_like)
    with pytest.raises(BackendError, match="engine file not found"):
        read_engine(tmp_path / "missing.engine")
    truncated = tmp_path / "truncated.engine"
    write_engine(truncated, header(), b"PLAN")
    truncated.write_bytes(truncated.read_bytes()[:-4])
    with pytest.raises(BackendError, match="truncated"):
        read_engine(truncated)


@pytest.mark.parametrize("kw,match", [(dict(tensorrt_version="10.9.0"),
                                       "built with TensorRT 10.8.0, this is TensorRT 10.9.0"),
                                      (dict(compute_capability="8.0"),
                                       "compute capability 9.0 \\(H100\\), this GPU is 8.0"),
                                      (dict(plugin_sha256="ef" * 32), "another dettool plugin library")])
def test_mismatched_engine_is_refused_saying_why(kw, match):
    current = dict(tensorrt_version="10.8.0", compute_capability="9.0", plugin_sha256="ab" * 32)
    check_compatible(header(), "x.engine", **current)  # a matching engine passes
    with pytest.raises(BackendError, match=match):
        check_compatible(header(), "x.engine", **{**current, **kw})


def _have_tensorrt() -> bool:
    try:
        import tensorrt
    except ImportError:
        return False
    return hasattr(tensorrt, "Builder")


@pytest.mark.skipif(_have_tensorrt(), reason="TensorRT is installed here")
def test_missing_tensorrt_says_what_to_install(tmp_path: Path):
    from dettool.runtime.tensorrt_env import tensorrt_env

    with pytest.raises(BackendError, match="pip install tensorrt"):
        tensorrt_env()


# ----------------------------------------------------------------------------------- network flags


class FakeTensorRT:
    """The names of the ``tensorrt`` module the engine builder uses."""

    __version__ = "10.16.1"
    float32, float16, int32, bool = "float32", "float16", "int32", "bool"

    class NetworkDefinitionCreationFlag:
        STRONGLY_TYPED = 5


def test_strongly_typed_flag_only_on_tensorrt_10():
    assert _network_flags(FakeTensorRT, True, 10) == 1 << 5
    assert _network_flags(FakeTensorRT, False, 10) == 0
    assert _network_flags(FakeTensorRT, True, 11) == 0  # deprecated and ignored: every network is typed


# ----------------------------------------------------------------------------------- loading the plugin library


def test_cuda_versions_must_agree():
    check_cuda_versions("lib.so", "13.0.48", "13", "13.0")
    check_cuda_versions("lib.so", "12.8.61", None, None)  # nothing known to compare with
    with pytest.raises(BackendError) as info:
        check_cuda_versions("lib.so", "13.0.48", None, "12.8")
    message = str(info.value)
    assert "\n" not in message and "CUDA 13.0.48" in message and "torch is built for CUDA 12" in message
    assert "rebuild the plugin library with a CUDA 12 toolkit" in message
    with pytest.raises(BackendError, match="TensorRT is built for CUDA 12 and torch is built for CUDA 13"):
        check_cuda_versions("lib.so", "13.0", "12", "13.0")


def test_tensorrt_cuda_version_from_the_distribution_name():
    assert tensorrt_cuda_version(["tensorrt_cu13_bindings"]) == "13"
    assert tensorrt_cuda_version(["tensorrt-cu12", "tensorrt_cu12_libs"]) == "12"
    assert tensorrt_cuda_version(["tensorrt"]) is None  # a tar or deb install does not say
    assert tensorrt_cuda_version([]) is None


class FakeRegistry:
    """TensorRT's plugin registry as far as dettool uses it: ``load_library`` fails (None) when a
    creator of the library is registered already, as ``IPluginRegistry::loadLibrary`` does."""

    def __init__(self, registered=()):
        self.creators = set(registered)
        self.loaded: list[str] = []

    def get_creator(self, name: str, version: str, namespace: str):
        known = name in self.creators and (version, namespace) == ("1", "dettool")
        return (name, version, namespace) if known else None

    def load_library(self, path: str):
        self.loaded.append(path)
        if self.creators & set(PLUGIN_NAMES):
            return None
        self.creators |= set(PLUGIN_NAMES)
        return object()


@pytest.fixture
def fake_tensorrt(monkeypatch, tmp_path):
    """``tensorrt_env`` on a fake ``tensorrt``, a fake plugin library file built with CUDA 13, torch
    and TensorRT for CUDA 13."""
    from dettool.exporters import trt_plugin_lib

    env_module = importlib.import_module("dettool.runtime.tensorrt_env")
    registry = FakeRegistry()

    class Logger:
        WARNING = 2

        def __init__(self, level: int):
            self.level = level

    trt = types.SimpleNamespace(__version__="10.16.1", Builder=object, Logger=Logger,
                                init_libnvinfer_plugins=lambda logger, namespace: True,
                                get_plugin_registry=lambda: registry)
    library = tmp_path / "libdettool_plugins.so"
    library.write_bytes(b"\x7fELF fake")
    monkeypatch.setenv(trt_plugin_lib.PLUGIN_LIBRARY_ENV, str(library))
    monkeypatch.setattr(trt_plugin_lib, "plugin_build_info", lambda path: {"cuda_version": "13.0.48"})
    monkeypatch.setattr(env_module, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(env_module, "tensorrt_cuda_version", lambda: "13")
    monkeypatch.setattr(torch.version, "cuda", "13.0")
    monkeypatch.setattr(env_module, "_ENV", None)
    return types.SimpleNamespace(module=env_module, registry=registry, library=library)


def test_plugin_library_is_registered_once(fake_tensorrt):
    env = fake_tensorrt.module.tensorrt_env()
    assert env.plugin_library == fake_tensorrt.library.resolve() and len(env.plugin_sha256) == 64
    assert fake_tensorrt.registry.loaded == [str(fake_tensorrt.library.resolve())]
    fake_tensorrt.module._ENV = None  # a second set-up in the process: the creators are there already
    fake_tensorrt.module.tensorrt_env()
    assert len(fake_tensorrt.registry.loaded) == 1


def test_creators_registered_through_ctypes_are_not_loaded_again(fake_tensorrt):
    fake_tensorrt.registry.creators |= set(PLUGIN_NAMES)  # dettoolRegisterPlugins() of a ctypes-loaded copy
    fake_tensorrt.module.tensorrt_env()
    assert fake_tensorrt.registry.loaded == []


def test_partly_registered_plugins_are_an_error(fake_tensorrt):
    fake_tensorrt.registry.creators.add("DettoolBatchedNMS")
    with pytest.raises(BackendError, match="holds DettoolBatchedNMS but not DettoolMultiLevelRoIAlign"):
        fake_tensorrt.module.tensorrt_env()


def test_plugin_library_of_another_cuda_is_refused_before_registration(fake_tensorrt, monkeypatch):
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(fake_tensorrt.module, "tensorrt_cuda_version", lambda: "12")
    with pytest.raises(BackendError, match="built with CUDA 13.0.48 .* rebuild the plugin library with a CUDA 12"):
        fake_tensorrt.module.tensorrt_env()
    assert fake_tensorrt.registry.loaded == []
