"""exporters/trt_plugin_lib.py: the plugin library's search order, fingerprint and build info."""
from __future__ import annotations

import hashlib
import shutil
import subprocess
from pathlib import Path

import pytest

import dettool
from dettool.exporters import trt_plugin_lib
from dettool.exporters.trt_plugin_lib import (
    PLUGIN_LIBRARY_ENV,
    PLUGIN_LIBRARY_NAME,
    find_plugin_library,
    plugin_build_info,
    plugin_library_candidates,
    plugin_library_hash,
)


@pytest.fixture
def fake_package(tmp_path, monkeypatch) -> Path:
    """A source checkout whose dettool package is tmp_path/repo/dettool."""
    repo = tmp_path / "repo"
    (repo / "dettool").mkdir(parents=True)
    (repo / "plugins_trt").mkdir()
    (repo / "CMakeLists.txt").write_text("")
    (repo / "dettool" / "__init__.py").write_text("")
    monkeypatch.setattr(trt_plugin_lib.dettool, "__file__", str(repo / "dettool" / "__init__.py"))
    monkeypatch.delenv(PLUGIN_LIBRARY_ENV, raising=False)
    return repo


def make_library(path: Path, content: bytes = b"\x7fELF fake") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def test_search_order(fake_package, monkeypatch, tmp_path):
    installed = fake_package / "dettool" / "lib" / PLUGIN_LIBRARY_NAME
    built = fake_package / "build" / PLUGIN_LIBRARY_NAME
    assert plugin_library_candidates() == [installed, built]
    with pytest.raises(FileNotFoundError, match="Searched"):
        find_plugin_library()
    make_library(built)
    assert find_plugin_library() == built.resolve()
    make_library(installed)
    assert find_plugin_library() == installed.resolve()  # the installed copy beats the build tree
    explicit = make_library(tmp_path / "elsewhere" / "custom.so")
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(explicit))
    assert find_plugin_library() == explicit.resolve()  # the environment beats both


def test_explicit_path_must_exist(fake_package, monkeypatch, tmp_path):
    make_library(fake_package / "dettool" / "lib" / PLUGIN_LIBRARY_NAME)
    monkeypatch.setenv(PLUGIN_LIBRARY_ENV, str(tmp_path / "missing.so"))
    with pytest.raises(FileNotFoundError, match=PLUGIN_LIBRARY_ENV):
        find_plugin_library()


def test_installed_package_has_no_build_tree_candidate(tmp_path, monkeypatch):
    site = tmp_path / "site-packages" / "dettool"
    site.mkdir(parents=True)
    monkeypatch.setattr(trt_plugin_lib.dettool, "__file__", str(site / "__init__.py"))
    assert plugin_library_candidates() == [site / "lib" / PLUGIN_LIBRARY_NAME]


def test_hash_is_sha256_of_the_file(tmp_path):
    content = bytes(range(256)) * 10_000  # several read blocks
    path = make_library(tmp_path / PLUGIN_LIBRARY_NAME, content)
    assert plugin_library_hash(path) == hashlib.sha256(content).hexdigest()
    assert plugin_library_hash(str(path)) != plugin_library_hash(make_library(tmp_path / "other.so", content + b"!"))


def test_real_checkout_candidates():
    package = Path(dettool.__file__).resolve().parent
    assert plugin_library_candidates()[0] == package / "lib" / PLUGIN_LIBRARY_NAME


def compile_library(tmp_path: Path, name: str, source: str) -> Path:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler")
    (tmp_path / f"{name}.c").write_text(source)
    path = tmp_path / f"{name}.so"
    subprocess.run([compiler, "-shared", "-fPIC", "-o", str(path), str(tmp_path / f"{name}.c")], check=True)
    return path


def test_build_info_is_read_from_the_library(tmp_path):
    """A library answering dettoolPluginBuildInfo() as plugins_trt/register.cpp does; another without it."""
    info = compile_library(tmp_path, "libinfo", 'const char* dettoolPluginBuildInfo(void) { return '
                           '"{\\"cuda_version\\": \\"13.0.48\\", \\"cudart_api_version\\": 13000}"; }\n')
    assert plugin_build_info(info) == {"cuda_version": "13.0.48", "cudart_api_version": 13000}
    other = compile_library(tmp_path, "libother", "int something(void) { return 1; }\n")
    with pytest.raises(ValueError, match="no dettoolPluginBuildInfo"):
        plugin_build_info(other)
    with pytest.raises(OSError):
        plugin_build_info(make_library(tmp_path / "not_elf.so", b"not a library"))
