"""MI commands over a :class:`StatsRegistry`, shaped as OpenSIPS answers them.

- ``get_statistics statistics`` -> ``{"core:rcv_requests": 3, "load:load": 24, ...}``;
  ``statistics`` is an array of names (``all``, ``group:``, ``group:name``, ``name``), a
  single string is accepted too (opensips-cli sends ``get_statistics load:``).
- ``list_statistics [statistics]`` -> ``{"core:rcv_requests": "incremental", ...}``.
- ``reset_statistics statistics`` -> ``"OK"`` (counters only).

Nothing matching is a 404 "Statistics Not Found". ``stats_mi_commands(registry)`` returns
the commands for an ``MiDispatcher``. For ``load:`` across the mesh, the gateway's registry
holds a ``load`` group that aggregates the processes' ``ProcessLoad`` snapshots with
``load_statistics``.
"""

from __future__ import annotations

from typing import Any

from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiCommand, MiError
from shared.stats.registry import StatsRegistry, UnknownStatisticError


def _names(statistics: Any) -> list[str]:
    if isinstance(statistics, str):
        statistics = [statistics]
    if (not isinstance(statistics, list) or not statistics
            or not all(isinstance(s, str) and s for s in statistics)):
        raise MiError(BAD_REQUEST, "Bad parameter",
                      "statistics must be a non-empty array of names")
    return statistics


def get_statistics(registry: StatsRegistry, statistics: Any) -> dict[str, int]:
    try:
        return registry.get_statistics(_names(statistics))
    except UnknownStatisticError as exc:
        raise MiError(NOT_FOUND, "Statistics Not Found") from exc


def list_statistics(registry: StatsRegistry, statistics: Any = None) -> dict[str, str]:
    try:
        return registry.list_statistics(_names(statistics) if statistics is not None else ["all"])
    except UnknownStatisticError as exc:
        raise MiError(NOT_FOUND, "Statistics Not Found") from exc


def reset_statistics(registry: StatsRegistry, statistics: Any) -> str:
    try:
        registry.reset_statistics(_names(statistics))
    except UnknownStatisticError as exc:
        raise MiError(NOT_FOUND, "Statistics Not Found") from exc
    return "OK"


def stats_mi_commands(registry: StatsRegistry) -> list[MiCommand]:
    async def _get(**kw: Any) -> dict[str, int]:
        return get_statistics(registry, **kw)

    async def _list(**kw: Any) -> dict[str, str]:
        return list_statistics(registry, **kw)

    async def _reset(**kw: Any) -> str:
        return reset_statistics(registry, **kw)

    return [
        MiCommand("get_statistics", _get, (("statistics",),), "read statistics"),
        MiCommand("list_statistics", _list, ((), ("statistics",)), "list statistics"),
        MiCommand("reset_statistics", _reset, (("statistics",),), "reset counters"),
    ]
