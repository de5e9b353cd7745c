"""Engine building around TensorRT: profiles from the config, the engine file, version checks.

TensorRT itself is absent here; what runs without it is tested here, the engine build itself in
tests/trt_engines (marked ``tensorrt``).
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from dettool.config.schema import DeployConfig, Invalid
from dettool.errors import BackendError, ExportError
from dettool.exporters.onnx2trt import profile_from_config
from dettool.runtime.engine_file import EngineHeader, check_compatible, is_engine_file, read_engine, write_engine
from dettool.runtime.metadata import DeployMetadata, Postprocess, Preprocess

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
