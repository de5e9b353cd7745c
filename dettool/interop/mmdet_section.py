"""What every MMDetection-to-dettool translator works on: the :class:`Translation` being built and
the :class:`Section` (one MMDetection config dict whose keys must all be understood)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

from dettool.errors import ConfigError

_MISSING = object()


@dataclass
class Translation:
    """The dettool config being built, the weight renaming rules and the training settings left out."""

    source: str
    config: dict = field(default_factory=dict)
    rules: list[tuple[str, str]] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)

    def fail(self, where: str, what: str) -> ConfigError:
        """The error for ``where`` (a config key path) and ``what`` is wrong with it, naming the source file."""
        return ConfigError(f"{self.source}: {where}: {what}")


class Section:
    """One MMDetection config dict whose keys are read at most once; ``done`` refuses the rest."""

    def __init__(self, t: Translation, value: Any, where: str):
        if not isinstance(value, dict):
            raise t.fail(where, f"expected a dict, got {type(value).__name__}")
        self.t, self.d, self.where, self.used = t, value, where, {"type", "init_cfg", "_scope_"}

    @property
    def type(self) -> str:
        """The section's MMDetection ``type`` name ('' when it has none)."""
        return str(self.d.get("type", ""))

    def get(self, key: str, default: Any = _MISSING) -> Any:
        """The value of ``key`` (marked as understood); ``default`` when absent, an error without one."""
        self.used.add(key)
        if key in self.d:
            return self.d[key]
        if default is _MISSING:
            raise self.t.fail(f"{self.where}.{key}", "missing")
        return default

    def expect(self, key: str, allowed: tuple, default: Any = _MISSING) -> Any:
        """The value of ``key``, which must be one of ``allowed`` (what dettool implements)."""
        value = self.get(key, default)
        if value not in allowed:
            raise self.t.fail(f"{self.where}.{key}", f"{value!r} is not implemented by dettool "
                                                     f"(supported: {', '.join(map(repr, allowed))})")
        return value

    def sub(self, key: str, default: Any = _MISSING) -> Section:
        """The dict under ``key`` as a section of its own."""
        return Section(self.t, self.get(key, default), f"{self.where}.{key}")

    def done(self, ignore: tuple[str, ...] = ()) -> None:
        """Refuse the first key not read (nor in ``ignore``): an option dettool would drop silently."""
        for key in self.d:
            if key not in self.used and key not in ignore:
                raise self.t.fail(f"{self.where}.{key}", f"option {key}={self.d[key]!r} is not implemented by dettool")


def table_entry(t: Translation, table: dict[str, Callable], s: Section, what: str) -> Callable:
    """``table``'s translator for ``s.type``; an error listing the supported types when there is none."""
    if s.type not in table:
        raise t.fail(f"{s.where}.type", f"{what} {s.type!r} is not implemented by dettool convert "
                                        f"(supported: {', '.join(sorted(table))})")
    return table[s.type]

