"""Statistics glue between a process's :class:`shared.stats.StatsRegistry` and MI.

Every runtime owns one ``StatsRegistry`` (``runtime.stats``) and declares in it:

* the OpenSIPS core SIP counters (zero until a SIP service counts), so ``get_statistics
  core:`` has the same shape on every instance;
* the ``load`` group from the 2.4 load model (:mod:`shared.stats.sampler`), installed on
  the running loop at start;
* ``pkmem:0-real_used_size``, ``pkmem:0-used_size``, ... and ``shmem:``: this process's
  memory in OpenSIPS's two groups (:mod:`shared.stats.memory` says which figure is what).

:func:`merge_stats` turns per-instance answers into one mesh-wide answer for the gateway.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from shared.rpc.jsonrpc import INVALID_PARAMS, NOT_FOUND, MiError
from shared.stats.memory import HOST_FIGURES, pkmem_values, read_memory, shmem_values
from shared.stats.registry import StatsRegistry, UnknownStatisticError

CORE_COUNTERS = (
    "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests",
    "drop_replies", "err_requests", "err_replies", "bad_URIs_rcvd", "unsupported_methods",
    "bad_msg_hdr",
)
T = TypeVar("T")
# Per-process names a process answers with its own number 0, renumbered by ps ID.
_PROC = re.compile(r"^load:(load|load1m|load10m)-proc-\d+$")
_PKMEM = re.compile(r"^pkmem:\d+-(.+)$")


def declare_process_stats(stats: StatsRegistry) -> None:
    """Core SIP counters and process memory (see the module docstring)."""
    for name in CORE_COUNTERS:
        stats.counter("core", name)
    stats.group("pkmem", lambda: pkmem_values(read_memory()))
    stats.group("shmem", lambda: shmem_values(read_memory()))


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
    averaged over the instances that reported them, and ``load:*-proc-N`` and
    ``pkmem:N-*`` are renamed to the answering instance's process id (its ``ps`` ID), as
    OpenSIPS numbers processes. The host's ``shmem:`` figures are taken once (the largest).
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
            m = _PKMEM.match(key)
            if m:
                key = f"pkmem:{proc_id}-{m.group(1)}"
            if key in HOST_FIGURES:
                sums[key] = max(sums.get(key, 0), value)
                counts[key] = 1
                continue
            sums[key] = sums.get(key, 0) + value
            counts[key] = counts.get(key, 0) + 1
    out: dict[str, int] = {}
    for key, total in sums.items():
        out[key] = round(total / counts[key]) if key.startswith("load:") else int(total)
    return dict(sorted(out.items()))


