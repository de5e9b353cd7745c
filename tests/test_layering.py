"""The package layers hold: ops, structures and config know nothing of the trainer; the runtimes
use the trainer's model building (to compare with PyTorch) but never its training code."""
from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAINING_CODE = ("dettool.trainer.train", "dettool.trainer.runner", "dettool.trainer.hooks",
                 "dettool.trainer.distributed", "dettool.trainer.models.losses")


def imported_modules(folder: Path) -> dict[str, set[str]]:
    """``{file: modules it imports}`` for every Python file under ``folder`` (top level and in functions)."""
    out = {}
    for path in folder.rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
        out[str(path.relative_to(REPO))] = names
    return out


def offenders(folder: str, forbidden: tuple[str, ...]) -> list[str]:
    return [f"{f}: {m}" for f, mods in imported_modules(REPO / folder).items() for m in mods
            if any(m == p or m.startswith(p + ".") for p in forbidden)]


def test_ops_structures_and_config_do_not_import_trainer_exporters_or_runtime():
    upper = ("dettool.trainer", "dettool.exporters", "dettool.runtime")
    for folder in ("dettool/ops", "dettool/structures", "dettool/config", "dettool/data", "dettool/evaluation"):
        assert offenders(folder, upper) == [], folder


def test_runtime_does_not_import_training_code():
    assert offenders("runtime", TRAINING_CODE) == []


def test_models_do_not_import_exporters_or_runtime():
    assert offenders("trainer/models", ("dettool.exporters", "dettool.runtime", "onnx", "onnxruntime",
                                        "tensorrt")) == []
