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
from typing import Annotated, Any, Literal, Union

import yaml

from dettool.config.schema import Config
from dettool.config.schema.common import Invalid, annotated_hints
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
#
# A value given for a field is built on top of that field's default (or of the value a base
# config gave it): a partial section keeps every key it does not name, whatever the class's own
# defaults are. A section whose ``type`` changes starts from its new class's defaults.

_NO_BASE = object()


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is Annotated:
        return _type_name(typing.get_args(tp)[0])
    if origin is Literal:
        return " | ".join(repr(a) for a in typing.get_args(tp))
    if origin in (Union, types.UnionType):
        return " | ".join(_type_name(a) for a in typing.get_args(tp))
    if dataclasses.is_dataclass(tp):
        return "mapping"
    return getattr(tp, "__name__", str(tp))


def _fail(source: str, key: str, msg: str) -> typing.NoReturn:
    raise ConfigError(f"{source}: {key or '<root>'}: {msg}")


def _join(prefix: str, key: str) -> str:
    if not prefix:
        return key
    return f"{prefix}{key}" if key.startswith("[") else f"{prefix}.{key}"


def _tag(cls: Any) -> Any:
    return typing.get_args(typing.get_type_hints(cls)["type"])[0]


def build(tp: Any, value: Any, source: str, prefix: str, base: Any = _NO_BASE) -> Any:
    """Convert plain YAML data ``value`` to type ``tp``; errors name ``source`` and the key.

    ``base`` is the value the field has without ``value`` (its default, or a base config's):
    a mapping given for a dataclass updates it key by key.
    """
    origin = typing.get_origin(tp)
    if origin is Annotated:  # ranges are checked by the section when it is built
        return build(typing.get_args(tp)[0], value, source, prefix, base)
    if tp is Any:
        return value
    if dataclasses.is_dataclass(tp):
        return _build_dataclass(tp, value, source, prefix, base)
    if origin is Literal:
        if value not in typing.get_args(tp) or isinstance(value, bool) != any(
                isinstance(a, bool) for a in typing.get_args(tp)):
            close = difflib.get_close_matches(str(value), [str(a) for a in typing.get_args(tp)], n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            _fail(source, prefix, f"{value!r} is not one of {_type_name(tp)}{hint}")
        return value
    if origin in (Union, types.UnionType):
        return _build_union(tp, value, source, prefix, base)
    if origin is tuple:
        return _build_tuple(tp, value, source, prefix, base)
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


def _strip(tp: Any) -> Any:
    return typing.get_args(tp)[0] if typing.get_origin(tp) is Annotated else tp


def _build_union(tp: Any, value: Any, source: str, prefix: str, base: Any) -> Any:
    args = typing.get_args(tp)
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    classes = [_strip(a) for a in options if dataclasses.is_dataclass(_strip(a))]
    tagged = [c for c in classes if "type" in typing.get_type_hints(c)]
    if tagged and isinstance(value, str) and value in {str(_tag(c)) for c in tagged}:
        value = {"type": value}  # a bare type name: that type with its defaults (``- Resize``)
    if classes and isinstance(value, dict):
        if len(classes) == 1 and "type" not in typing.get_type_hints(classes[0]):
            return _build_dataclass(classes[0], value, source, prefix, base)
        return _build_tagged(classes, value, source, prefix, base)
    if classes and len(classes) == len(options):  # sections only: a mapping, or a bare type name
        names = f" or one of the type names {', '.join(repr(str(_tag(c))) for c in tagged)}" if tagged else ""
        _fail(source, prefix, f"expected a mapping{names}, got {value!r}")
    for option in options:
        try:
            return build(option, value, source, prefix, base)
        except ConfigError:
            continue
    _fail(source, prefix, f"expected {_type_name(tp)}, got {value!r}")


def _build_tuple(tp: Any, value: Any, source: str, prefix: str, base: Any) -> tuple:
    args = typing.get_args(tp)
    if not isinstance(value, (list, tuple)):
        _fail(source, prefix, f"expected a list, got {value!r}")
    if len(args) == 2 and args[1] is Ellipsis:
        args = (args[0],) * len(value)
    elif len(value) != len(args):
        _fail(source, prefix, f"expected a list of {len(args)} items, got {len(value)}")
    # A list as long as the base list updates it item by item (cascade stages); else it replaces it.
    bases = base if isinstance(base, tuple) and len(base) == len(value) else (_NO_BASE,) * len(value)
    return tuple(build(a, v, source, f"{prefix}[{i}]", b) for i, (a, v, b) in enumerate(zip(args, value, bases)))


def _build_tagged(classes: list, value: dict, source: str, prefix: str, base: Any) -> Any:
    tags = {_tag(c): c for c in classes}
    base_tag = _tag(type(base)) if type(base) in classes else next(iter(tags))
    tag = value.get("type", base_tag)
    if tag not in tags:
        close = difflib.get_close_matches(str(tag), [str(t) for t in tags], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        _fail(source, _join(prefix, "type"), f"{tag!r} is not one of {', '.join(map(repr, tags))}{hint}")
    return _build_dataclass(tags[tag], value, source, prefix, base if tag == base_tag else _NO_BASE)


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return _NO_BASE


def _build_dataclass(cls: Any, value: Any, source: str, prefix: str, base: Any = _NO_BASE) -> Any:
    if not isinstance(value, dict):
        _fail(source, prefix, f"expected a mapping, got {value!r}")
    hints = annotated_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "source" or cls is not Config}
    own_base = base if type(base) is cls else None
    kwargs = {}
    for key, item in value.items():
        dotted = _join(prefix, str(key))
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(fields)})"
            _fail(source, dotted, f"unknown key{hint}")
        field_base = getattr(own_base, key) if own_base is not None else _field_default(fields[key])
        kwargs[key] = build(hints[key], item, source, dotted, field_base)
    if own_base is None:
        for name, f in fields.items():
            if name not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                _fail(source, _join(prefix, name), "required key is missing")
    try:
        return dataclasses.replace(own_base, **kwargs) if own_base is not None else cls(**kwargs)
    except Invalid as exc:
        _fail(source, _join(prefix, exc.key), exc.message)
