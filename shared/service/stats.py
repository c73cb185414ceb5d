"""Statistics glue between a process's :class:`shared.stats.StatsRegistry` and MI.

Every runtime owns one ``StatsRegistry`` (``runtime.stats``) and declares in it:

* the OpenSIPS core SIP counters (zero until a SIP service counts), so ``get_statistics
  core:`` has the same shape on every instance;
* the ``load`` group from the 2.4 load model (:mod:`shared.stats.sampler`), installed on
  the running loop at start;
* ``pkmem:real_used_size`` / ``pkmem:max_used_size``: this process's memory, the nearest
  Python analogue of OpenSIPS's private memory group.

:func:`merge_stats` turns per-instance answers into one mesh-wide answer for the gateway.
"""

from __future__ import annotations

import re
import resource
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from shared.rpc.jsonrpc import INVALID_PARAMS, NOT_FOUND, MiError
from shared.stats.registry import StatsRegistry, UnknownStatisticError

CORE_COUNTERS = (
    "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests",
    "drop_replies", "err_requests", "err_replies", "bad_URIs_rcvd", "unsupported_methods",
    "bad_msg_hdr",
)
T = TypeVar("T")
_PROC = re.compile(r"^load:(load|load1m|load10m)-proc-\d+$")


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def declare_process_stats(stats: StatsRegistry) -> None:
    """Core SIP counters and process memory (see the module docstring)."""
    for name in CORE_COUNTERS:
        stats.counter("core", name)
    stats.gauge("pkmem", "real_used_size", _rss_bytes)
    stats.gauge("pkmem", "max_used_size", lambda: max(
        _rss_bytes(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024))


def stat_names(statistics: Any) -> list[str]:
    """MI ``statistics`` param (absent, a string, or a list of strings) as a list."""
    if statistics is None:
        return ["all"]
    if isinstance(statistics, str):
        return statistics.split() or ["all"]
    if isinstance(statistics, list | tuple) and all(isinstance(s, str) for s in statistics):
        return list(statistics) or ["all"]
    raise MiError(INVALID_PARAMS, "Invalid params", "statistics must be a list of names")


def _asked(read: Callable[[list[str]], T], statistics: Any) -> T:
    """Runs one registry call on the MI ``statistics`` param; nothing matching is a 404."""
    try:
        return read(stat_names(statistics))
    except UnknownStatisticError as exc:
        raise MiError(NOT_FOUND, "Statistics Not Found") from exc


def mi_get(stats: StatsRegistry, statistics: Any) -> dict[str, int]:
    return _asked(stats.get_statistics, statistics)


def mi_list(stats: StatsRegistry, statistics: Any) -> dict[str, str]:
    return _asked(stats.list_statistics, statistics)


def mi_reset(stats: StatsRegistry, statistics: Any) -> int:
    return _asked(stats.reset_statistics, statistics)


def merge_stats(answers: Sequence[tuple[int, dict[str, Any]]]) -> dict[str, int]:
    """Merges ``(process id, answer)`` pairs from every instance into one answer.

    Counters and amounts are summed. ``load:`` values are shares: the mesh-wide ones are
    averaged over the instances that reported them, and ``load:*-proc-N`` is renamed to
    the answering instance's process id (its ``ps`` ID), as OpenSIPS numbers processes.
    """
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for proc_id, answer in answers:
        for key, value in answer.items():
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            m = _PROC.match(key)
            if m:
                key = f"load:{m.group(1)}-proc-{proc_id}"
            sums[key] = sums.get(key, 0) + value
            counts[key] = counts.get(key, 0) + 1
    out: dict[str, int] = {}
    for key, total in sums.items():
        out[key] = round(total / counts[key]) if key.startswith("load:") else int(total)
    return dict(sorted(out.items()))


