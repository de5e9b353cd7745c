"""The native sources compile: every CUDA kernel with nvcc for sm_80 and sm_90, and the TensorRT
plugin sources against TensorRT's headers when they are provided.

TensorRT headers are not installable in CI: point DETTOOL_TRT_HEADERS (or TensorRT_ROOT) at a
folder holding include/NvInferRuntime.h, e.g. include/ of github.com/NVIDIA/TensorRT, to run those
tests; they skip otherwise.
"""
from __future__ import annotations

import os
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGINS = REPO / "plugins_trt"
KERNELS = sorted(PLUGINS.glob("*/*.cu"))
TRT_SOURCES = sorted(PLUGINS.glob("*/*_plugin.cpp")) + [PLUGINS / "common" / "plugin_utils.cpp"]
NVCC = shutil.which("nvcc")


def cuda_include_dir() -> Path | None:
    if NVCC is None:
        return None
    for root in (Path(NVCC).resolve().parents[1], Path("/usr/local/cuda")):
        if (root / "include" / "cuda_runtime_api.h").is_file():
            return root / "include"
    return None


def tensorrt_include_dir() -> Path | None:
    for var in ("DETTOOL_TRT_HEADERS", "TensorRT_ROOT"):
        root = os.environ.get(var)
        if root:
            for candidate in (Path(root) / "include", Path(root)):
                if (candidate / "NvInferRuntime.h").is_file():
                    return candidate
    return None


def run(cmd: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True)


def test_every_plugin_has_a_kernel():
    assert {k.parent.name for k in KERNELS} == {"batched_nms", "multi_level_roi_align", "modulated_deform_conv",
                                                "ps_roi_align"}


@pytest.mark.skipif(NVCC is None, reason="nvcc not found: the CUDA kernels cannot be compiled here")
def test_kernels_compile_for_sm80_and_sm90(tmp_path):
    """nvcc -c for compute/sm 80 and 90, warnings as errors (e.g. a host function called from
    device code)."""

    def compile_one(kernel: Path) -> subprocess.CompletedProcess:
        return run([NVCC, "-std=c++17", "-O3", "-Xcompiler", "-fPIC", "-I", str(PLUGINS),
                    "-gencode", "arch=compute_80,code=sm_80", "-gencode", "arch=compute_90,code=sm_90",
                    "--Werror", "all-warnings", "-c", str(kernel), "-o", str(tmp_path / f"{kernel.stem}.o")])

    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 3)) as pool:
        results = list(pool.map(compile_one, KERNELS))
    failures = [f"{k.name}:\n{r.stderr}" for k, r in zip(KERNELS, results) if r.returncode != 0]
    assert not failures, "\n".join(failures)
    assert all((tmp_path / f"{k.stem}.o").stat().st_size > 0 for k in KERNELS)


@pytest.mark.skipif(tensorrt_include_dir() is None or cuda_include_dir() is None,
                    reason="set DETTOOL_TRT_HEADERS to TensorRT headers (and have the CUDA toolkit) to compile "
                           "the plugins")
def test_plugin_sources_compile_against_tensorrt_headers(tmp_path):
    (tmp_path / "build_info.h").write_text('#define DETTOOL_BUILD_CUDA_COMPILER_VERSION ""\n'
                                           '#define DETTOOL_BUILD_CUDA_ARCHITECTURES ""\n'
                                           '#define DETTOOL_BUILD_CXX_COMPILER ""\n#define DETTOOL_BUILD_TYPE ""\n')
    cxx = shutil.which("c++") or shutil.which("g++")
    assert cxx, "no C++ compiler"

    def check(source: Path) -> subprocess.CompletedProcess:
        return run([cxx, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-Wno-deprecated-declarations",
                    "-I", str(PLUGINS), "-I", str(tmp_path), "-isystem", str(tensorrt_include_dir()),
                    "-isystem", str(cuda_include_dir()), str(source)])

    sources = TRT_SOURCES + [PLUGINS / "register.cpp"]
    with ThreadPoolExecutor(max_workers=min(os.cpu_count() or 1, 4)) as pool:
        results = list(pool.map(check, sources))
    failures = [f"{s.name}:\n{r.stderr}" for s, r in zip(sources, results) if r.returncode != 0]
    assert not failures, "\n".join(failures)


@pytest.mark.slow
@pytest.mark.skipif(tensorrt_include_dir() is None or NVCC is None or shutil.which("cmake") is None,
                    reason="needs cmake, nvcc and DETTOOL_TRT_HEADERS (TensorRT headers)")
def test_plugin_library_builds_and_passes_its_api_test(tmp_path):
    """CMake builds libdettool_plugins.so for sm_80 from headers alone (no libnvinfer) and the
    plugin API test (creators, shapes, formats, serialization, registration) passes."""
    build = tmp_path / "build"
    configure = run(["cmake", "-S", str(REPO), "-B", str(build), f"-DTensorRT_ROOT={tensorrt_include_dir().parent}",
                     "-DDETTOOL_CUDA_ARCHS=80", f"-DDETTOOL_PYTHON_PACKAGE_DIR={tmp_path / 'pkg'}"])
    assert configure.returncode == 0, configure.stdout + configure.stderr
    assert "TensorRT ON" in configure.stdout
    jobs = str(min(os.cpu_count() or 1, 2))
    built = run(["cmake", "--build", str(build), "-j", jobs])
    assert built.returncode == 0, built.stdout + built.stderr
    tests = run(["ctest", "--test-dir", str(build), "-R", "plugin_api", "--output-on-failure"])
    assert tests.returncode == 0, tests.stdout + tests.stderr
    symbols = run(["nm", "-D", "--defined-only", str(build / "libdettool_plugins.so")]).stdout
    for name in ("getCreators", "dettoolPluginBuildInfo", "dettoolRegisterPlugins", "setLoggerFinder"):
        assert f" T {name}\n" in symbols
    assert "libnvinfer" not in run(["ldd", str(build / "libdettool_plugins.so")]).stdout
