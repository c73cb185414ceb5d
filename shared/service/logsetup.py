"""structlog setup for a service process: key=value lines on stderr, or JSON lines.

Called once from a process's ``main()`` (structlog's configuration is per process); every
line carries the service name so the supervisor's merged output stays readable.

The ``[log]`` section chooses for every process at once (``SIPMESH_LOG_FORMAT=json`` in
the supervisor's environment reaches all its children):

* ``format``: ``console`` (``2026-01-01T10:00:00Z [info] service_started id=...``) or
  ``json`` (one object per line: ``timestamp``, ``level``, ``event``, ``service``,
  ``pid`` and the event's own keys, e.g. ``call_id``); empty = the caller's choice (console, or the
  gateway's ``[gateway] log_json``);
* ``level``: ``debug``, ``info``, ``warning``, ``error``, ``critical``; empty = the
  service's own ``log_level`` setting.

The level can change while the process runs (:func:`set_level`, MI ``log_level``): the
bound loggers compare against one module-level threshold on each call, so a change
reaches loggers already created and cached (structlog's own filtering loggers fix their
level when first used).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from typing import Any

import structlog

from shared.config import ConfigError, load_section

FORMATS = ("", "console", "json")
# OpenSIPS log levels (log_level MI, -3..4) and the nearest Python level.
OPENSIPS_LEVELS = {-3: logging.CRITICAL, -2: logging.CRITICAL, -1: logging.ERROR,
                   0: logging.ERROR, 1: logging.WARNING, 2: logging.INFO, 3: logging.INFO,
                   4: logging.DEBUG}
_TO_OPENSIPS = {logging.CRITICAL: -2, logging.ERROR: -1, logging.WARNING: 1,
                logging.INFO: 3, logging.DEBUG: 4}
_threshold = logging.INFO


@dataclasses.dataclass(frozen=True)
class LogConfig:
    """The ``[log]`` section (see the module docstring)."""

    format: str = ""
    level: str = ""

    def validate(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"[log] format must be console or json, not {self.format!r}")
        if self.level and python_level(self.level) is None:
            raise ValueError(f"[log] level {self.level!r} is not a log level")


def python_level(name: str) -> int | None:
    """``debug``/``info``/... (any case) as a :mod:`logging` level, else None."""
    value = logging.getLevelName(name.strip().upper())
    return value if isinstance(value, int) else None


def current_level() -> int:
    """This process's threshold, as a Python :mod:`logging` level."""
    return _threshold


def opensips_level(level: int | None = None) -> int:
    """A Python level (default: the current one) on OpenSIPS's -3..4 scale."""
    level = _threshold if level is None else level
    for python, opensips in sorted(_TO_OPENSIPS.items(), reverse=True):
        if level >= python:
            return opensips
    return 4


def set_level(level: int) -> None:
    """Changes this process's threshold at once (structlog and stdlib logging)."""
    global _threshold
    _threshold = level
    logging.getLogger().setLevel(level)


class _LevelBoundLogger(structlog.BoundLoggerBase):
    """A bound logger whose methods check the process's current threshold (above)."""

    def _at(self, level: int, method: str, event: str | None, kw: dict[str, Any]) -> Any:
        if level < _threshold:
            return None
        return self._proxy_to_logger(method, event, **kw)

    def debug(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.DEBUG, "debug", event, kw)

    def info(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.INFO, "info", event, kw)

    msg = info

    def warning(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.WARNING, "warning", event, kw)

    warn = warning

    def error(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.ERROR, "error", event, kw)

    err = error

    def critical(self, event: str | None = None, **kw: Any) -> Any:
        return self._at(logging.CRITICAL, "critical", event, kw)

    fatal = critical

    def exception(self, event: str | None = None, **kw: Any) -> Any:
        kw.setdefault("exc_info", True)
        return self._at(logging.ERROR, "error", event, kw)

    def log(self, level: int, event: str | None = None, **kw: Any) -> Any:
        name = logging.getLevelName(level).lower()
        return self._at(level, name if name in ("debug", "info", "warning", "error",
                                                "critical") else "info", event, kw)


def log_config() -> LogConfig:
    """The ``[log]`` section; a bad value ends the process as a configuration error."""
    try:
        cfg = load_section(LogConfig, "log")
        cfg.validate()
    except (ConfigError, ValueError) as exc:
        from shared.service.runtime import exit_on_config_error

        exit_on_config_error("", exc)
        raise  # not reached: exit_on_config_error raises SystemExit
    return cfg


def configure_logging(service: str, *, level: str = "info", json: bool = False) -> None:
    """Configures structlog (and stdlib logging, which libraries use) for this process;
    ``[log] format`` and ``[log] level`` win over the arguments when set."""
    cfg = log_config()
    if cfg.format:
        json = cfg.format == "json"
    lvl = python_level(cfg.level or level) or logging.INFO
    logging.basicConfig(level=lvl, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")
    set_level(lvl)
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso"),
            structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=_LevelBoundLogger,
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=True,
    )
    structlog.contextvars.bind_contextvars(service=service, pid=os.getpid())
