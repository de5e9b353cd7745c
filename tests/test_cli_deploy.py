"""``dettool export`` and ``dettool eval-engine``: wrong files and settings end in one line
``dettool: error: ...`` (exit status 1, no traceback), before any slow work starts.

Most cases run the CLI in-process (``dettool.cli.main``); one runs it as a real process. The
successful export and the parity verdicts are tested on an exported model in tests/runtime/.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest
import torch
from detector_helpers import run_cli
from onnx import TensorProto, helper

from dettool.config import load_config
from dettool.runtime import tensorrt_installed
from dettool.trainer import builder

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FASTER = CONFIGS / "faster_rcnn_r18_fpn_synth.yaml"
RETINA = CONFIGS / "retinanet_r18_fpn_synth.yaml"


def assert_one_error_line(code: int, stdout: str, stderr: str, *fragments: str) -> str:
    assert code == 1, stdout + stderr
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = stderr.splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("dettool: error: ")
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def eval_engine(engine: Path, *extra) -> tuple[int, str, str]:
    return run_cli(["eval-engine", FASTER, "no_such_checkpoint.pth", "--engine", engine, *extra])


def identity_onnx(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "identity",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])
    model.ir_version = 10
    onnx.save(model, path)
    return path


# ----------------------------------------------------------------------------------- eval-engine


def test_eval_engine_missing_engine(tmp_path):
    missing = tmp_path / "missing.onnx"
    assert_one_error_line(*eval_engine(missing), f"{missing}: model file not found")


def test_eval_engine_corrupt_onnx(tmp_path):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(identity_onnx(tmp_path / "ok.onnx").read_bytes()[:-7])
    assert_one_error_line(*eval_engine(corrupt), str(corrupt), "not a readable ONNX model", "corrupt or truncated")


def test_eval_engine_tensorrt_engine_to_onnxruntime(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"DTTRTENG" + bytes(100))
    line = assert_one_error_line(*eval_engine(engine, "--backend", "onnxruntime"))
    assert line == f"dettool: error: {engine}: is not an ONNX model (a TensorRT engine? use --backend tensorrt)"


def test_eval_engine_onnx_that_is_not_dettool(tmp_path):
    path = identity_onnx(tmp_path / "other.onnx")
    assert_one_error_line(*eval_engine(path), str(path), "not a dettool deploy graph", "dettool export --to onnx")


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed")
def test_eval_engine_tensorrt_backend_without_tensorrt(tmp_path):
    engine = tmp_path / "model.engine"
    engine.write_bytes(b"DTTRTENG" + bytes(100))
    assert_one_error_line(*eval_engine(engine, "--backend", "tensorrt"),
                          "TensorRT is not installed: install it with `pip install tensorrt`")


def test_eval_engine_error_in_a_real_process(tmp_path):
    """The same line from a real ``python -m dettool`` process (nothing printed but the error)."""
    engine = tmp_path / "model.plan"
    engine.write_bytes(b"\x00\x00\x00\x00ftrt" + bytes(100))
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, "-m", "dettool", "eval-engine", str(FASTER), "x.pth", "--engine",
                           str(engine)], capture_output=True, text=True, env=env, timeout=180, cwd=tmp_path)
    assert_one_error_line(proc.returncode, proc.stdout, proc.stderr, "is not an ONNX model (a TensorRT engine?")


# ----------------------------------------------------------------------------------- export


def test_export_checkpoint_of_another_model(tmp_path):
    """A RetinaNet checkpoint given with the Faster R-CNN config: CheckpointError, before tracing."""
    cfg = load_config(RETINA, ["data.synth=null"])
    checkpoint = tmp_path / "retina.pth"
    torch.save({"model": builder.build_model(cfg).state_dict()}, checkpoint)
    code, stdout, stderr = run_cli(["export", FASTER, checkpoint, "--to", "onnx", "--out", tmp_path / "m.onnx"])
    assert_one_error_line(code, "", stderr, str(checkpoint), "checkpoint does not match the config's model")
    assert not (tmp_path / "m.onnx").exists()


def test_export_missing_checkpoint_and_wrong_suffix(tmp_path):
    missing = tmp_path / "missing.pth"
    assert_one_error_line(*run_cli(["export", FASTER, missing, "--to", "onnx", "--out", tmp_path / "m.onnx"]),
                          f"{missing}: checkpoint not found")
    assert_one_error_line(*run_cli(["export", FASTER, missing, "--to", "onnx", "--out", tmp_path / "m.engine"]),
                          "must end in .onnx")


@pytest.mark.skipif(tensorrt_installed(), reason="TensorRT is installed")
def test_export_to_tensorrt_without_tensorrt(tmp_path):
    code, stdout, stderr = run_cli(["export", FASTER, tmp_path / "x.pth", "--to", "tensorrt",
                                    "--out", tmp_path / "m.engine"])
    assert_one_error_line(code, "", stderr, "TensorRT is not installed: install it with `pip install tensorrt`",
                          "--to onnx")
    assert stdout == ""  # refused before the ONNX export started


def test_export_default_output_path():
    from dettool.exporters.export import default_output

    cfg = load_config(FASTER, ["work_dir=/w/faster"])
    assert default_output(cfg, "onnx") == Path("/w/faster/deploy/faster_rcnn_r18_fpn_synth.onnx")
    assert default_output(cfg, "onnx", portable=True, fp16=True) == Path(
        "/w/faster/deploy/faster_rcnn_r18_fpn_synth_portable_fp16.onnx")
    assert default_output(cfg, "tensorrt", fp16=True) == Path("/w/faster/deploy/faster_rcnn_r18_fpn_synth_fp16.engine")
