"""Read an MMDetection (mmengine) Python config without executing it.

mmengine runs a ``.py`` config as Python. dettool instead evaluates the subset MMDetection's
configs are written in, as literals: assignments of constants, ``dict(...)``, lists, tuples,
dict displays, names assigned earlier in the same file, ``_base_.a.b`` and ``{{_base_.a.b}}``
references, indexing, arithmetic on numbers, string / list concatenation and repetition,
comprehensions over literal lists, and assignments into them (``_base_.optim_wrapper.type = ...``).
``_base_`` files are read the same way and merged with mmengine's rules (child
values override, dicts merge key by key unless they carry ``_delete_=True``, lists replace,
duplicate keys across bases are an error), so the result equals ``mmengine.Config.fromfile(path)
.to_dict()`` (tests/interop/test_mmdet_config.py checks every shipped config of the families
dettool implements). Anything else (imports, calls other than ``dict``, conditionals, ``{{$ENV}}``
variables, ``mmdet::`` package paths) is refused with one line naming the file, line and construct.
"""
from __future__ import annotations

import ast
import copy
import operator
import re
from pathlib import Path
from typing import Any

from dettool.errors import ConfigError

BASE_KEY = "_base_"
DELETE_KEY = "_delete_"
_BASE_VAR = re.compile(r"\{\{\s*_base_\.([\w.]+)\s*\}\}")
_ENV_VAR = re.compile(r"\{\{\s*\$\w+\s*(?::[^}]*)?\}\}")
_NUMBER_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
               ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}
_UNARY_OPS = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_MAX_DEPTH = 32
_MAX_REPEAT = 100_000


class _Refused(Exception):
    def __init__(self, node: ast.AST, what: str):
        super().__init__(what)
        self.line = getattr(node, "lineno", 0)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


class _Evaluator:
    """Evaluates the literal subset of one config file's expressions."""

    def __init__(self, base: dict):
        self.base = base
        self.names: dict[str, Any] = {}

    def __call__(self, node: ast.expr, scope: dict[str, Any] | None = None) -> Any:
        method = getattr(self, f"_{type(node).__name__}", None)
        if method is None:
            raise _Refused(node, f"{type(node).__name__} expressions ({ast.unparse(node)[:60]!r})")
        return method(node, scope or {})

    def assign(self, target: ast.expr, value: Any) -> None:
        """``name = value``, or ``_base_.a.b[i].c = value`` / ``name.a = value`` into the dict held
        there (mmengine's configs set base values this way)."""
        if isinstance(target, ast.Name):
            if target.id == BASE_KEY:
                raise _Refused(target, "assignments to _base_ after its first one")
            self.names[target.id] = value
            return
        if not isinstance(target, (ast.Attribute, ast.Subscript)):
            raise _Refused(target, f"assignment to {ast.unparse(target)!r}")
        container = self._held(target.value)
        key = target.attr if isinstance(target, ast.Attribute) else self(target.slice)
        if isinstance(target, ast.Attribute) and not isinstance(container, dict):
            raise _Refused(target, f"{ast.unparse(target.value)!r} is not a dict")
        try:
            container[key] = value
        except (IndexError, TypeError) as e:
            raise _Refused(target, f"{ast.unparse(target)!r} cannot be assigned ({e})") from None

    def _held(self, node: ast.expr) -> Any:
        """The object itself (not a copy) that an assignment target's prefix names."""
        if isinstance(node, ast.Name):
            if node.id == BASE_KEY:
                return self.base
            if node.id not in self.names:
                raise _Refused(node, f"name {node.id!r} is not assigned earlier in the file")
            return self.names[node.id]
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            container = self._held(node.value)
            key = node.attr if isinstance(node, ast.Attribute) else self(node.slice)
            try:
                return container[key]
            except (KeyError, IndexError, TypeError):
                raise _Refused(node, f"{ast.unparse(node)!r} names nothing in the config") from None
        raise _Refused(node, f"assignment into {ast.unparse(node)!r}")

    def _Constant(self, node: ast.Constant, scope: dict) -> Any:
        return node.value

    def _Name(self, node: ast.Name, scope: dict) -> Any:
        if node.id in scope:
            return scope[node.id]
        if node.id == BASE_KEY:
            return self.base
        if node.id not in self.names:
            raise _Refused(node, f"name {node.id!r} is not assigned earlier in the file")
        return self.names[node.id]

    def _Attribute(self, node: ast.Attribute, scope: dict) -> Any:
        value = self(node.value, scope)
        if not isinstance(value, dict) or node.attr not in value:
            raise _Refused(node, f"{ast.unparse(node)!r} names no key of the base config")
        return value[node.attr]

    def _Subscript(self, node: ast.Subscript, scope: dict) -> Any:
        value, index = self(node.value, scope), self(node.slice, scope)
        try:
            return value[index]
        except (KeyError, IndexError, TypeError) as e:
            raise _Refused(node, f"{ast.unparse(node)!r} cannot be indexed ({e})") from None

    def _Slice(self, node: ast.Slice, scope: dict) -> slice:
        parts = [None if n is None else self(n, scope) for n in (node.lower, node.upper, node.step)]
        return slice(*parts)

    def _List(self, node: ast.List, scope: dict) -> list:
        return [self(e, scope) for e in node.elts]

    def _Tuple(self, node: ast.Tuple, scope: dict) -> tuple:
        return tuple(self(e, scope) for e in node.elts)

    def _Dict(self, node: ast.Dict, scope: dict) -> dict:
        out: dict = {}
        for k, v in zip(node.keys, node.values):
            if k is None:
                out.update(self._mapping(v, scope))
            else:
                out[self(k, scope)] = self(v, scope)
        return out

    def _mapping(self, node: ast.expr, scope: dict) -> dict:
        value = self(node, scope)
        if not isinstance(value, dict):
            raise _Refused(node, f"'**' of a {type(value).__name__}")
        return value

    def _Call(self, node: ast.Call, scope: dict) -> dict:
        if not (isinstance(node.func, ast.Name) and node.func.id == "dict") or node.args:
            raise _Refused(node, f"call {ast.unparse(node.func)!r} (only dict(key=value, ...) is read)")
        out: dict = {}
        for kw in node.keywords:
            if kw.arg is None:
                out.update(self._mapping(kw.value, scope))
            else:
                out[kw.arg] = self(kw.value, scope)
        return out

    def _UnaryOp(self, node: ast.UnaryOp, scope: dict) -> Any:
        value = self(node.operand, scope)
        if type(node.op) not in _UNARY_OPS or not _is_number(value):
            raise _Refused(node, f"operator in {ast.unparse(node)!r}")
        return _UNARY_OPS[type(node.op)](value)

    def _BinOp(self, node: ast.BinOp, scope: dict) -> Any:
        left, right = self(node.left, scope), self(node.right, scope)
        if _is_number(left) and _is_number(right) and type(node.op) in _NUMBER_OPS:
            try:
                return _NUMBER_OPS[type(node.op)](left, right)
            except ZeroDivisionError:
                raise _Refused(node, f"division by zero in {ast.unparse(node)!r}") from None
        if isinstance(node.op, ast.Add) and type(left) is type(right) and isinstance(left, (str, list, tuple)):
            return left + right
        if isinstance(node.op, ast.Mult) and isinstance(left, (str, list, tuple)) and type(right) is int:
            if len(left) * right > _MAX_REPEAT:
                raise _Refused(node, f"a repetition longer than {_MAX_REPEAT} in {ast.unparse(node)[:60]!r}")
            return left * right
        raise _Refused(node, f"operation {ast.unparse(node)[:60]!r}")

    def _ListComp(self, node: ast.ListComp, scope: dict) -> list:
        if len(node.generators) != 1 or node.generators[0].is_async:
            raise _Refused(node, "comprehensions with more than one 'for'")
        gen = node.generators[0]
        if not isinstance(gen.target, ast.Name):
            raise _Refused(node, "comprehension targets other than one name")
        items = self(gen.iter, scope)
        if not isinstance(items, (list, tuple)):
            raise _Refused(node, "comprehension over something other than a list or tuple")
        out = []
        for item in items:
            inner = {**scope, gen.target.id: item}
            if all(self(cond, inner) is True for cond in gen.ifs):
                out.append(self(node.elt, inner))
        return out

    def _JoinedStr(self, node: ast.JoinedStr, scope: dict) -> str:
        parts = []
        for v in node.values:
            if isinstance(v, ast.FormattedValue):
                if v.conversion != -1 or v.format_spec is not None:
                    raise _Refused(node, "f-string conversions or format specs")
                parts.append(str(self(v.value, scope)))
            else:
                parts.append(self(v, scope))
        return "".join(parts)


def _substitute_text(text: str, path: Path) -> str:
    """mmengine's textual substitutions: predefined variables, ``{{_base_.x}}`` placeholders."""
    if m := _ENV_VAR.search(text):
        raise ConfigError(f"{path}: {m.group(0)} reads an environment variable; dettool reads configs "
                          "as literals (pass --trust-config to have mmengine execute it)")
    predefined = {"fileDirname": str(path.parent), "fileBasename": path.name,
                  "fileBasenameNoExtension": path.stem, "fileExtname": path.suffix}
    for name, value in predefined.items():
        text = re.sub(r"\{\{\s*" + name + r"\s*\}\}", value.replace("\\", "/"), text)
    return _BASE_VAR.sub(r"_base_.\1", text)


def _base_files(value: Any, path: Path) -> list[Path]:
    files = [value] if isinstance(value, str) else value
    if not isinstance(files, (list, tuple)) or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"{path}: _base_ must be a file name or a list of file names")
    out = []
    for f in files:
        if "::" in f:
            raise ConfigError(f"{path}: _base_ {f!r} names a file inside an installed package; "
                              "give the config with its _base_ files as relative paths")
        base = (path.parent / f).resolve()
        if not base.is_file():
            raise ConfigError(f"{path}: _base_ file {f!r} not found ({base})")
        if base.suffix != ".py":
            raise ConfigError(f"{path}: _base_ file {f!r} is not a .py config")
        out.append(base)
    return out


def merge_a_into_b(a: dict, b: dict) -> dict:
    """mmengine's ``Config._merge_a_into_b``: ``a``'s values override ``b``'s; dicts merge key by
    key unless they hold ``_delete_=True``; anything else (lists included) replaces."""
    b = dict(b)
    for k, v in a.items():
        if isinstance(v, dict) and k in b and not v.pop(DELETE_KEY, False):
            if not isinstance(b[k], dict):
                raise ValueError(f"{k} is a dict in the child config but a {type(b[k]).__name__} in its base "
                                 f"(set {DELETE_KEY}=True to replace it)")
            b[k] = merge_a_into_b(v, b[k])
        else:
            b[k] = v
    return b


def read_mmdet_config(path: str | Path, _depth: int = 0) -> dict:
    """The config as the plain dict ``mmengine.Config.fromfile(path).to_dict()`` gives, read
    without executing the file; :class:`ConfigError` names the file, line and construct it refuses."""
    path = Path(path).resolve()
    if _depth > _MAX_DEPTH:
        raise ConfigError(f"{path}: _base_ files nest deeper than {_MAX_DEPTH} (a cycle?)")
    if path.suffix != ".py":
        raise ConfigError(f"{path}: not an MMDetection Python config (.py)")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror or e})") from None
    try:
        tree = ast.parse(_substitute_text(text, path), filename=str(path))
    except SyntaxError as e:
        raise ConfigError(f"{path}:{e.lineno}: not valid Python ({e.msg})") from None
    base_assign = [s for s in tree.body if isinstance(s, ast.Assign) and len(s.targets) == 1
                   and isinstance(s.targets[0], ast.Name) and s.targets[0].id == BASE_KEY]
    base: dict = {}
    if base_assign:
        try:
            files = _base_files(_Evaluator({})(base_assign[-1].value), path)
        except _Refused as e:
            raise ConfigError(f"{path}:{e.line}: _base_ uses {e}") from None
        for f in files:
            part = read_mmdet_config(f, _depth + 1)
            if dup := sorted(base.keys() & part.keys()):
                raise ConfigError(f"{path}: _base_ files define the same keys {dup}")
            base.update(part)
    evaluate = _Evaluator(base)
    for stmt in tree.body:
        if stmt in base_assign:
            continue
        if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant):
            continue  # a docstring or a bare constant
        if not isinstance(stmt, ast.Assign):
            kind = "imports" if isinstance(stmt, (ast.Import, ast.ImportFrom)) else f"a {type(stmt).__name__} statement"
            raise ConfigError(f"{path}:{stmt.lineno}: {kind}; dettool reads only assignments of literal values "
                              "(pass --trust-config to have mmengine execute the config)")
        try:
            value = evaluate(stmt.value)
            for target in stmt.targets:
                evaluate.assign(target, value)
        except _Refused as e:
            raise ConfigError(f"{path}:{e.line or stmt.lineno}: uses {e}; dettool reads only literal values "
                              "(pass --trust-config to have mmengine execute the config)") from None
    # As mmengine: names alias objects while the file is evaluated (``d = _base_.model; d.t = 2``
    # changes the base's model), then each key's value is copied on its own (``b = a`` followed by
    # ``_delete_`` in ``a`` replaces ``b``'s base too).
    own = {k: copy.deepcopy(v) for k, v in evaluate.names.items() if not k.startswith("__")}
    try:
        merged = merge_a_into_b(own, base)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return {k: v for k, v in merged.items() if not k.startswith("__")}
