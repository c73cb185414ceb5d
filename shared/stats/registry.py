"""Named statistics with OpenSIPS ``group:name`` naming, for ``get_statistics`` and Prometheus.

Three kinds, as in OpenSIPS:

- counters (``registry.counter("core", "rcv_requests")``), incremental, resettable;
- function-backed values (``registry.gauge("usrloc", "registered_users", fn)``),
  non-incremental, read when asked;
- function-backed groups (``registry.group("load", fn)``) whose names are dynamic (the
  ``load-proc-N`` family depends on how many processes there are).

``get_statistics(["core:", "load:load", "rcv_replies", "all"])`` takes the names the MI
command takes: ``all``, a whole group ``group:``, one ``group:name``, or a bare ``name``
looked up in every group; the answer maps ``group:name`` to an integer, like OpenSIPS.
Unknown names are left out; when nothing at all matched, :class:`UnknownStatisticError`.

``registry.collector()`` exports everything to a prometheus ``CollectorRegistry`` the
process wires in: ``sipmesh_<group>_<name>`` (``-`` and ``.`` become ``_``), counters as
counters, the rest as gauges, with no doubled word (:func:`metric_name`: a name that
starts with its group's word drops the group, ``load:load1m`` is ``sipmesh_load1m``, not
``sipmesh_load_load1m``; a process number is dropped, ``pkmem:0-used_size`` is
``sipmesh_pkmem_used_size``: the scraped process is the one). A statistic whose name
another collector of the same registry already exports (the event bus's own
``sipmesh_events_buffered``) is left to that one, so no family appears twice.
``CoreStats`` holds the edge's OpenSIPS core counters.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")


class UnknownStatisticError(LookupError):
    pass


class StatCounter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self, amount: int = 1) -> None:
        self.value += amount


def _check(kind: str, text: str) -> str:
    if not _NAME.match(text):
        raise ValueError(f"bad statistic {kind} {text!r}")
    return text


class StatsRegistry:
    def __init__(self, prefix: str = "sipmesh") -> None:
        self.prefix = prefix
        self._counters: dict[str, dict[str, StatCounter]] = {}
        self._gauges: dict[str, dict[str, Callable[[], int]]] = {}
        self._groups: dict[str, Callable[[], Mapping[str, int]]] = {}

    # -- declaring ----------------------------------------------------------------------
    def counter(self, group: str, name: str) -> StatCounter:
        """The counter ``group:name``, created on first use (the same object afterwards)."""
        slot = self._counters.setdefault(_check("group", group), {})
        if name not in slot:
            if name in self._gauges.get(group, {}):
                raise ValueError(f"{group}:{name} is already a function-backed statistic")
            slot[_check("name", name)] = StatCounter()
        return slot[name]

    def gauge(self, group: str, name: str, fn: Callable[[], int]) -> None:
        if name in self._counters.get(group, {}):
            raise ValueError(f"{group}:{name} is already a counter")
        self._gauges.setdefault(_check("group", group), {})[_check("name", name)] = fn

    def group(self, group: str, fn: Callable[[], Mapping[str, int]]) -> None:
        if group in self._counters or group in self._gauges:
            raise ValueError(f"group {group!r} already has fixed statistics")
        self._groups[_check("group", group)] = fn

    # -- reading ------------------------------------------------------------------------
    def _group_values(self, group: str) -> dict[str, int]:
        out = {n: c.value for n, c in self._counters.get(group, {}).items()}
        out.update({n: int(fn()) for n, fn in self._gauges.get(group, {}).items()})
        if group in self._groups:
            out.update({n: int(v) for n, v in self._groups[group]().items()})
        return out

    def groups(self) -> list[str]:
        return sorted(set(self._counters) | set(self._gauges) | set(self._groups))

    def snapshot(self) -> dict[str, int]:
        return {f"{g}:{n}": v for g in self.groups() for n, v in self._group_values(g).items()}

    def get_statistics(self, names: Iterable[str]) -> dict[str, int]:
        out: dict[str, int] = {}
        cache: dict[str, dict[str, int]] = {}

        def values(group: str) -> dict[str, int]:
            if group not in cache:
                cache[group] = self._group_values(group)
            return cache[group]

        for raw in names:
            name = str(raw).strip()
            if name == "all":
                for g in self.groups():
                    out.update({f"{g}:{n}": v for n, v in values(g).items()})
            elif name.endswith(":"):
                g = name[:-1]
                if g in self.groups():
                    out.update({f"{g}:{n}": v for n, v in values(g).items()})
            elif ":" in name:
                g, _, n = name.partition(":")
                if g in self.groups() and n in values(g):
                    out[name] = values(g)[n]
            else:
                for g in self.groups():
                    if name in values(g):
                        out[f"{g}:{name}"] = values(g)[name]
        if not out:
            raise UnknownStatisticError("Statistics Not Found")
        return out

    def list_statistics(self, names: Iterable[str] = ("all",)) -> dict[str, str]:
        found = self.get_statistics(names)
        return {
            key: ("incremental" if key.split(":", 1)[1] in self._counters.get(key.split(":")[0], {})
                  else "non-incremental")
            for key in found
        }

    def reset_statistics(self, names: Iterable[str]) -> int:
        """Zero the matching counters (function-backed values cannot be reset)."""
        hit = 0
        for key in self.get_statistics(names):
            g, _, n = key.partition(":")
            counter = self._counters.get(g, {}).get(n)
            if counter is not None:
                counter.value = 0
                hit += 1
        return hit

    # -- prometheus -----------------------------------------------------------------------
    def collector(self, taken: Callable[[], Iterable[str]] | None = None) -> Collector:
        """A Prometheus collector of every statistic; ``taken`` names the metrics other
        collectors of the same registry export (those are skipped)."""
        return _RegistryCollector(self, taken)


_PROC_NUMBER = re.compile(r"^\d+-")


def metric_name(prefix: str, group: str, name: str) -> str:
    """``sipmesh_<group>_<name>`` without doubled words (see the module docstring)."""
    name = _PROC_NUMBER.sub("", name)
    base = f"{prefix}_{name}" if name.startswith(group) else f"{prefix}_{group}_{name}"
    return re.sub(r"[^A-Za-z0-9_]", "_", base)


class _RegistryCollector(Collector):
    def __init__(self, registry: StatsRegistry,
                 taken: Callable[[], Iterable[str]] | None = None) -> None:
        self._r = registry
        self._taken = taken

    def collect(self) -> Iterator[Metric]:
        r = self._r
        taken = set(self._taken()) if self._taken is not None else set()
        for g in r.groups():
            counters = r._counters.get(g, {})
            for n, v in r._group_values(g).items():
                help_text = f"OpenSIPS statistic {g}:{n}"
                name = metric_name(r.prefix, g, n)
                if name in taken or f"{name}_total" in taken:
                    continue
                if n in counters:
                    m: Metric = CounterMetricFamily(name, help_text)
                    m.add_metric([], v)  # type: ignore[attr-defined]
                else:
                    m = GaugeMetricFamily(name, help_text, value=v)
                yield m


CORE_COUNTERS = (
    "rcv_requests", "rcv_replies", "fwd_requests", "fwd_replies",
    "drop_requests", "drop_replies", "err_requests", "err_replies",
)


@dataclass
class CoreStats:
    """The OpenSIPS core counters the edge keeps, plus per-method request counters
    (``core:rcv_requests_invite``, ... created on first sight of a method)."""

    registry: StatsRegistry
    counters: dict[str, StatCounter] = field(init=False)

    def __post_init__(self) -> None:
        self.counters = {n: self.registry.counter("core", n) for n in CORE_COUNTERS}

    def request_received(self, method: str) -> None:
        self.counters["rcv_requests"].inc()
        m = method.lower()
        if _NAME.match(m):
            self.registry.counter("core", f"rcv_requests_{m}").inc()

    def __getattr__(self, name: str) -> StatCounter:
        try:
            return self.__dict__["counters"][name]  # type: ignore[no-any-return]
        except KeyError:
            raise AttributeError(name) from None
