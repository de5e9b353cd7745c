"""Typed configuration: YAML files loaded into frozen dataclasses that reject unknown keys."""

from dettool.config.loader import load_config, parse_overrides
from dettool.config.schema import Config

__all__ = ["Config", "load_config", "parse_overrides"]
