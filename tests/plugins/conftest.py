"""Builds libdettool_cpu_ops.so (the plugins' CPU implementations) once per test session.

Set DETTOOL_CPU_OPS_LIB to use an already built library (ctest does). Otherwise CMake configures
the repository without CUDA and TensorRT into a temporary folder and builds only that target;
the tests skip, saying why, when cmake or a C++ compiler is missing.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # dettool_cpu_ops, dettool_op_references

from dettool_cpu_ops import CpuOps  # noqa: E402

REPO = Path(__file__).resolve().parents[2]


def build_cpu_ops(build_dir: Path) -> Path:
    """Configure (CPU only) and build the ``dettool_cpu_ops`` target; returns the library path."""
    if shutil.which("cmake") is None:
        pytest.skip("cmake not found: cannot build libdettool_cpu_ops.so (install cmake >= 3.24)")
    configure = subprocess.run(
        ["cmake", "-S", str(REPO), "-B", str(build_dir), "-DDETTOOL_ENABLE_CUDA=OFF",
         "-DDETTOOL_ENABLE_TENSORRT=OFF", "-DDETTOOL_BUILD_TESTS=OFF", "-DCMAKE_BUILD_TYPE=Release"],
        capture_output=True, text=True)
    if configure.returncode != 0:
        if "No CMAKE_CXX_COMPILER could be found" in configure.stderr + configure.stdout:
            pytest.skip("no C++ compiler found: cannot build libdettool_cpu_ops.so")
        raise RuntimeError(f"cmake configure failed:\n{configure.stdout}\n{configure.stderr}")
    jobs = str(min(os.cpu_count() or 1, 2))
    build = subprocess.run(["cmake", "--build", str(build_dir), "--target", "dettool_cpu_ops", "-j", jobs],
                           capture_output=True, text=True)
    if build.returncode != 0:
        raise RuntimeError(f"building dettool_cpu_ops failed:\n{build.stdout}\n{build.stderr}")
    return build_dir / "libdettool_cpu_ops.so"


@pytest.fixture(scope="session")
def cpu_ops(tmp_path_factory) -> CpuOps:
    """The loaded CPU implementations (built for this session unless DETTOOL_CPU_OPS_LIB is set)."""
    prebuilt = os.environ.get("DETTOOL_CPU_OPS_LIB")
    path = Path(prebuilt) if prebuilt else build_cpu_ops(tmp_path_factory.mktemp("cpu_ops_build"))
    return CpuOps(path)
