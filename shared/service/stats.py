"""OpenSIPS-style statistics of one process: ``group:name`` values, counters and gauges.

Counters are *incremental* (``reset_statistics`` zeroes them); gauges are read from a
function at query time and are *non-incremental*, as OpenSIPS's function-backed stats.
Queries take OpenSIPS's forms: ``all``, a whole group ``core:``, or one ``core:rcv_requests``.

The same values are exported to Prometheus by :class:`StatsCollector` as
``sipmesh_<group>_<name>`` (counters with ``_total``), so there is one source of truth.

:class:`LoadMeter` gives the ``load`` group: the share of wall time this process spent on
CPU over the last second, minute and ten minutes (OpenSIPS 2.4's ``load``, ``load1m``,
``load10m``; a Python service is one process, so no per-process breakdown).
"""

from __future__ import annotations

import collections
import re
import resource
import time
from collections.abc import Callable, Iterable, Sequence

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from shared.rpc.jsonrpc import INVALID_PARAMS, NOT_FOUND, MiError

INCREMENTAL = "incremental"
NON_INCREMENTAL = "non-incremental"

# OpenSIPS core SIP counters: declared by every process (zero unless it handles SIP), so
# `get_statistics core:` answers the same shape everywhere.
CORE_COUNTERS = (
    "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies", "drop_requests",
    "drop_replies", "err_requests", "err_replies", "bad_URIs_rcvd", "unsupported_methods",
    "bad_msg_hdr", "timestamp",
)


class Counter:
    """An incremental statistic."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, n: int = 1) -> None:
        self.value += n


class Statistics:
    """The statistics of one process, addressed as ``group:name``."""

    def __init__(self) -> None:
        self._counters: dict[str, Counter] = {}
        self._gauges: dict[str, Callable[[], float]] = {}

    @staticmethod
    def _key(group: str, name: str) -> str:
        if not group or not name or ":" in group or ":" in name:
            raise ValueError(f"bad statistic name {group!r}:{name!r}")
        return f"{group}:{name}"

    def counter(self, group: str, name: str) -> Counter:
        """The counter ``group:name`` (created at zero the first time)."""
        key = self._key(group, name)
        if key in self._gauges:
            raise ValueError(f"{key} is a gauge")
        return self._counters.setdefault(key, Counter())

    def gauge(self, group: str, name: str, read: Callable[[], float]) -> None:
        """Declares a function-backed (non-incremental) statistic."""
        key = self._key(group, name)
        if key in self._counters:
            raise ValueError(f"{key} is a counter")
        self._gauges[key] = read

    def keys(self) -> list[str]:
        return sorted([*self._counters, *self._gauges])

    def _select(self, names: Sequence[str] | str | None) -> list[str]:
        if names is None:
            names = ["all"]
        if isinstance(names, str):
            names = names.split()
        if not isinstance(names, list | tuple) or not all(isinstance(n, str) for n in names):
            raise MiError(INVALID_PARAMS, "Invalid params", "statistics must be a list of names")
        every = self.keys()
        chosen: list[str] = []
        for name in names:
            if name == "all":
                chosen.extend(every)
            elif name.endswith(":"):
                chosen.extend(k for k in every if k.startswith(name))
            elif name in self._counters or name in self._gauges:
                chosen.append(name)
        return list(dict.fromkeys(chosen))

    def read(self, key: str) -> float:
        if key in self._counters:
            return self._counters[key].value
        try:
            return self._gauges[key]()
        except Exception:  # a broken gauge must not break the whole answer
            return 0

    def get(self, names: Sequence[str] | str | None) -> dict[str, float]:
        """OpenSIPS ``get_statistics``; MiError(404) when nothing matches."""
        keys = self._select(names)
        if not keys:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        return {k: self.read(k) for k in keys}

    def list(self, names: Sequence[str] | str | None) -> dict[str, str]:
        """OpenSIPS ``list_statistics``: name -> incremental / non-incremental."""
        keys = self._select(names)
        if not keys:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        return {k: INCREMENTAL if k in self._counters else NON_INCREMENTAL for k in keys}

    def reset(self, names: Sequence[str] | str | None) -> int:
        """OpenSIPS ``reset_statistics``: zeroes matching counters; returns how many."""
        keys = self._select(names)
        if not keys:
            raise MiError(NOT_FOUND, "Statistics Not Found")
        reset = [k for k in keys if k in self._counters]
        for k in reset:
            self._counters[k].value = 0
        return len(reset)


_METRIC_SAFE = re.compile(r"[^a-zA-Z0-9_]")


class StatsCollector:
    """Prometheus collector exporting a :class:`Statistics` (register it per app)."""

    def __init__(self, stats: Statistics, prefix: str = "sipmesh") -> None:
        self._stats = stats
        self._prefix = prefix

    def collect(self) -> Iterable[Metric]:
        for key in self._stats.keys():
            group, name = key.split(":", 1)
            metric = _METRIC_SAFE.sub("_", f"{self._prefix}_{group}_{name}").lower()
            value = self._stats.read(key)
            if key in self._stats._counters:
                yield CounterMetricFamily(metric, f"OpenSIPS statistic {key}", value=value)
            else:
                yield GaugeMetricFamily(metric, f"OpenSIPS statistic {key}", value=value)


class LoadMeter:
    """Busy share of this process (CPU time / wall time) over 1 s, 1 min and 10 min."""

    def __init__(
        self, wall: Callable[[], float] = time.monotonic,
        cpu: Callable[[], float] = time.process_time,
    ) -> None:
        self._wall, self._cpu = wall, cpu
        # One sample per second for ten minutes (plus the newest).
        self._samples: collections.deque[tuple[float, float]] = collections.deque(maxlen=601)
        self.sample()

    def sample(self) -> None:
        self._samples.append((self._wall(), self._cpu()))

    def load(self, window: float) -> float:
        """Percent busy over roughly the last ``window`` seconds (0-100, integer like OpenSIPS)."""
        now_wall, now_cpu = self._wall(), self._cpu()
        base = self._samples[0]
        for sample in reversed(self._samples):
            if now_wall - sample[0] >= window:
                base = sample
                break
        dt = now_wall - base[0]
        if dt <= 0:
            return 0
        return round(min(100.0, max(0.0, 100.0 * (now_cpu - base[1]) / dt)))

    def declare(self, stats: Statistics) -> None:
        stats.gauge("load", "load", lambda: self.load(1.0))
        stats.gauge("load", "load1m", lambda: self.load(60.0))
        stats.gauge("load", "load10m", lambda: self.load(600.0))


def _rss_bytes() -> int:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * resource.getpagesize()
    except (OSError, ValueError, IndexError):
        return 0


def declare_process_stats(stats: Statistics) -> None:
    """Core SIP counters (zero until used) and process memory as OpenSIPS's ``pkmem``."""
    for name in CORE_COUNTERS:
        if name != "timestamp":
            stats.counter("core", name)
    stats.gauge("core", "timestamp", lambda: int(time.time()))
    stats.gauge("pkmem", "real_used_size", _rss_bytes)
    stats.gauge("pkmem", "max_used_size",
                lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)


def merge_stats(answers: Iterable[dict[str, float]]) -> dict[str, float]:
    """Merges per-instance answers into one: sums, except ``load:`` and ``core:timestamp``
    which are averaged / maxed (a load is a share, not an amount)."""
    sums: dict[str, float] = {}
    counts: dict[str, int] = {}
    for answer in answers:
        for key, value in answer.items():
            if not isinstance(value, int | float):
                continue
            if key == "core:timestamp":
                sums[key] = max(sums.get(key, 0), value)
            else:
                sums[key] = sums.get(key, 0) + value
            counts[key] = counts.get(key, 0) + 1
    for key in sums:
        if key.startswith("load:"):
            sums[key] = round(sums[key] / counts[key])
    return dict(sorted(sums.items()))


