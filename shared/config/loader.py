"""The loader behind :func:`shared.config.load_section` (see the package docstring)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# The exit status of a process that stopped on a configuration error (sysexits.h
# EX_CONFIG): the supervisor does not restart it, since the same settings fail again.
EXIT_CONFIG = 78


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or unsafe."""


def section_env_name(section: str, field: str) -> str:
    """The environment variable that overrides ``field`` of ``section``."""
    return f"SIPMESH_{section}_{field}".upper().replace("-", "_").replace(".", "_")


def _read_file(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file {path} does not exist") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def _convert(value: Any, tp: Any, where: str) -> Any:
    """Converts a TOML or environment value to the declared field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None or value == "":
            return None
        return _convert(value, args[0], where)
    if origin is tuple:
        inner = typing.get_args(tp)[0] if typing.get_args(tp) else str
        if isinstance(value, str):
            items: list[Any] = [v.strip() for v in value.split(",") if v.strip()]
        elif isinstance(value, list | tuple):
            items = list(value)
        else:
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return tuple(_convert(v, inner, where) for v in items)
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            return int(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from exc
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected a number, got {value!r}") from exc
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def load_section(
    cls: type[T],
    section: str,
    *,
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
) -> T:
    """Builds the ``cls`` dataclass for ``[section]`` from defaults, file and environment."""
    env = os.environ if environ is None else environ
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    file = path if path is not None else env.get("SIPMESH_CONFIG") or None
    table: dict[str, Any] = {}
    if file:
        raw: Any = _read_file(Path(file))
        # Dotted sections ("edge.runtime") are nested TOML tables ([edge.runtime]).
        for part in section.split("."):
            raw = raw.get(part, {}) if isinstance(raw, dict) else None
            if not isinstance(raw, dict):
                raise ConfigError(f"[{section}] in {file} must be a table")
        table = raw
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    # Sub-tables are sections of their own (e.g. [edge.runtime] inside [edge]).
    unknown = sorted(k for k in set(table) - set(fields) if not isinstance(table[k], dict))
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name in fields:
        where = f"[{section}].{name}"
        if name in table:
            values[name] = _convert(table[name], hints[name], where)
        env_name = section_env_name(section, name)
        if env_name in env:
            values[name] = _convert(env[env_name], hints[name], env_name)
    return cls(**values)
