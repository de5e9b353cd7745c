"""YAML -> typed ``Config``: ``base:`` inheritance, ``--set`` overrides, strict key checking.

Every error is a ``ConfigError`` whose message names the file and the dotted key, and for a
misspelled key the closest valid one.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Union

import yaml

from dettool.config.schema import Config
from dettool.errors import ConfigError

_MAX_BASE_DEPTH = 16


def _read_yaml(path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"{path}: invalid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _deep_merge(base: dict, override: dict) -> dict:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            # A changed ``type`` starts the section afresh: keys of the old type would not fit.
            if "type" in value and value["type"] != out[key].get("type"):
                out[key] = dict(value)
            else:
                out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def load_raw(path: str | Path, _depth: int = 0) -> dict:
    """Read a YAML config and resolve its ``base:`` chain (paths relative to the including file)."""
    path = Path(path)
    if _depth > _MAX_BASE_DEPTH:
        raise ConfigError(f"{path}: 'base' chain deeper than {_MAX_BASE_DEPTH} (a cycle?)")
    data = _read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    bases = base if isinstance(base, list) else [base]
    merged: dict = {}
    for item in bases:
        if not isinstance(item, str):
            raise ConfigError(f"{path}: 'base' must be a path or a list of paths")
        merged = _deep_merge(merged, load_raw(path.parent / item, _depth + 1))
    return _deep_merge(merged, data)


def parse_overrides(items: typing.Iterable[str]) -> dict:
    """``["train.max_epochs=3", "data.num_workers=0"]`` -> nested dict (values parsed as YAML)."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, raw = item.split("=", 1)
        parts = key.strip().split(".")
        if not all(parts):
            raise ConfigError(f"--set {item!r}: empty key segment")
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError:
            value = raw
        node = out
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item!r}: '{part}' is set twice with different shapes")
        node[parts[-1]] = value
    return out


def load_config(path: str | Path, overrides: typing.Iterable[str] = ()) -> Config:
    """Load ``path`` (with its bases), apply ``--set`` overrides, and build the typed ``Config``."""
    path = Path(path)
    raw = _deep_merge(load_raw(path), parse_overrides(overrides))
    raw.pop("source", None)
    cfg = build(Config, raw, source=str(path), prefix="")
    work_dir = cfg.work_dir or str(Path("work_dirs") / path.stem)
    return dataclasses.replace(cfg, work_dir=work_dir, source=str(path))


# ----------------------------------------------------------------------------------- conversion


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _fail(source: str, key: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{source}: {key or '<root>'}: {msg}")


def build(tp: Any, value: Any, source: str, prefix: str) -> Any:
    """Convert plain YAML data ``value`` to type ``tp``; errors name ``source`` and the key."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, source, prefix)
    if origin is Literal:
        if value not in typing.get_args(tp):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(source, prefix, f"{value!r} is not one of {_type_name(tp)}{hint}")
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        classes = [a for a in options if dataclasses.is_dataclass(a)]
        if len(classes) == 1 and isinstance(value, dict):
            return _build_dataclass(classes[0], value, source, prefix)
        if classes and isinstance(value, dict):
            return _build_tagged(classes, value, source, prefix)
        for option in options:
            try:
                return build(option, value, source, prefix)
            except ConfigError:
                continue
        _fail(source, prefix, f"expected {_type_name(tp)}, got {value!r}")
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            _fail(source, prefix, f"expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(build(args[0], v, source, f"{prefix}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            _fail(source, prefix, f"expected a list of {len(args)} items, got {len(value)}")
        return tuple(build(a, v, source, f"{prefix}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        if not isinstance(value, dict):
            _fail(source, prefix, f"expected a mapping, got {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            _fail(source, prefix, f"expected true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            _fail(source, prefix, f"expected an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            _fail(source, prefix, f"expected a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            _fail(source, prefix, f"expected a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {prefix}")  # a schema bug, not user error


def _build_tagged(classes: list, value: dict, source: str, prefix: str) -> Any:
    tags = {typing.get_args(typing.get_type_hints(c)["type"])[0]: c for c in classes}
    tag = value.get("type", next(iter(tags)))
    if tag not in tags:
        close = difflib.get_close_matches(str(tag), list(tags), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(source, f"{prefix}.type", f"{tag!r} is not one of {', '.join(map(repr, tags))}{hint}")
    return _build_dataclass(tags[tag], value, source, prefix)


def _build_dataclass(cls: Any, value: Any, source: str, prefix: str) -> Any:
    if not isinstance(value, dict):
        _fail(source, prefix, f"expected a mapping, got {value!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source" or cls is not Config}
    kwargs = {}
    for key, item in value.items():
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(fields)})"
            _fail(source, dotted, f"unknown key{hint}")
        kwargs[key] = build(hints[key], item, source, dotted)
    for name, f in fields.items():
        if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            _fail(source, f"{prefix}.{name}" if prefix else name, "required key is missing")
    return cls(**kwargs)
