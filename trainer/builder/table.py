"""The builder tables: config class -> the function that builds its object.

Each component family has one ``Table``; a config class it does not list is an error that names
the config key, the class and what the table knows, never a silently built default.
"""
from __future__ import annotations

from typing import Any, Callable

from dettool.errors import ConfigError


class Table:
    """A mapping from config classes to builder functions.

    Args:
        family: what the table builds, for messages ("backbone", "sampler", ...).
        entries: ``{ConfigClass: build(cfg, *args, **kwargs)}``.
    """

    def __init__(self, family: str, entries: dict[type, Callable[..., Any]]) -> None:
        self.family = family
        self.entries = dict(entries)

    def __contains__(self, cfg_class: type) -> bool:
        return cfg_class in self.entries

    def build(self, cfg: Any, *args: Any, key: str, **kwargs: Any) -> Any:
        """Build ``cfg`` (found at config ``key``) with its entry's function."""
        fn = self.entries.get(type(cfg))
        if fn is None:
            known = ", ".join(sorted(c.__name__ for c in self.entries))
            raise ConfigError(f"{key}: {type(cfg).__name__} is not a {self.family} dettool can build "
                              f"(known: {known})")
        return fn(cfg, *args, **kwargs)
