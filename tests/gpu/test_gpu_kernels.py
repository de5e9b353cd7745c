"""The CUDA kernels through tests/gpu/check_kernels_cuda.py (a torch extension, no TensorRT).

On a machine with a GPU: ``python -m pytest -m gpu tests/gpu`` (or run the script itself, which
prints the table). Without one, the build-only test still compiles the kernels and the binding
with torch's extension toolchain when nvcc is there.

The whole GPU check (these kernels, every synth detector's deploy graph on CUDA against the CPU,
and the Faster R-CNN R-50-FPN training step against torchvision's, one table as JSON + Markdown
in $OUT) is one command, under 10 minutes on an H200, no TensorRT needed:
``python tests/gpu/check_gpu.py`` (``--device cpu --quick`` on a machine without a GPU; its
CPU quick mode is tested in test_gpu_check.py).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).with_name("check_kernels_cuda.py")


def run_script(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    if "CUDA_HOME" not in env and shutil.which("nvcc"):
        env["CUDA_HOME"] = str(Path(shutil.which("nvcc")).resolve().parents[1])
    return subprocess.run([sys.executable, str(SCRIPT), "--build-dir", str(tmp_path / "ext"), *args],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("nvcc") is None or torch.version.cuda is None,
                    reason="needs nvcc and a CUDA build of torch to compile the extension")
def test_extension_builds_without_a_gpu(tmp_path):
    result = run_script("--build-only", tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_kernels_match_torchvision_on_cuda(tmp_path):
    result = run_script(tmp_path=tmp_path)
    print(result.stdout)
    assert result.returncode == 0, result.stdout + result.stderr
