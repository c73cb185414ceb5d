"""What the web console shows, computed from MI answers and events (sans-IO).

The console's I/O side (:mod:`gateway.console.service`) polls the mesh through the
gateway's own router once a second while someone watches, and hands the raw answers to
:meth:`ConsoleModel.update` as a :class:`Poll`; every event the gateway's feed receives
goes to :meth:`ConsoleModel.on_event`. ``update`` returns the *view*: one JSON document
the page draws as it is (the page holds no logic beyond drawing). Time is passed in
(``now``, seconds); nothing here reads a clock or does I/O.

The view (every key always present; lists sorted so the page is stable)::

    {"time": now,
     "services": [{"name", "instances": [{"id", "address", "pid", "version", "health",
                                          "ps_id", "cluster", "node", "uptime"}]}],
     "clusters": [{"id", "service", "nodes": [{"id", "answering", "description"}],
                   "links": [{"from", "to", "state", "via"}],       # from's view of to
                   "tags": [{"tag", "holders", "backups"}]}],
     "load": [{"ps_id", "name", "load", "load1m", "load10m",
               "series": [[t, load, load1m, load10m], ...]}],
     "registrations": {"users", "per_instance": [{"id", "users"}], "rate",
                       "series": [[t, users, rate], ...]},
     "dialogs": None | {"active", "series": [[t, active], ...]},
     "events": {"rates": [{"name", "per_second"}], "recent": [{"time", "name",
                "params", "service", "node"}]}}

Rules, each where the page would otherwise mislead:

* **users**: nodes of one cluster share their table (full sharing), so their counts are
  not added up: a cluster counts once, as its largest node; unclustered registrars keep
  tables of their own and add up. The same for active dialogs.
* **registration rate**: the growth of ``registrar:accepted_regs`` summed over the
  registrars between two polls, per second; a counter that went back (a restart, a
  reset) counts from zero.
* **links**: as each node that answered sees them (``clusterer_list``); a node that no
  longer answers (killed) still appears, its peers' links to it showing Probe then Down;
  ``via`` names the node packets are relayed through when the direct link is down.
* **tags**: the holder of ``name/cluster`` is the node reporting it ``active``
  (``clusterer_list_shtags``); none while a takeover is under way.
* **events per second**: over the last ``rate_window`` seconds, per event name; the
  recent list keeps the last ``recent`` ``E_CORE_THRESHOLD`` and ``E_CLUSTERER_*`` events.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

RECENT_KINDS = ("E_CORE_THRESHOLD", "E_CLUSTERER_")


@dataclasses.dataclass(frozen=True)
class InstanceInfo:
    """One registered process, as discovery lists it."""

    service: str
    id: str
    address: str
    port: int
    passing: bool
    meta: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Poll:
    """One round of raw answers.

    ``stats``: each process's own ``get_statistics`` answer keyed by its ``ps`` ID;
    ``ps_ids``: instance id -> ``ps`` ID; ``clusters``/``shtags``: the gateway's merged
    ``clusterer_list``/``clusterer_list_shtags`` answers (None: nothing clustered)."""

    instances: Sequence[InstanceInfo]
    ps_ids: Mapping[str, int]
    stats: Mapping[int, Mapping[str, Any]]
    clusters: Mapping[str, Any] | None = None
    shtags: Sequence[Mapping[str, Any]] | None = None


def _num(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) \
        else 0.0


class ConsoleModel:
    """Keeps the short history the plots need and builds the view (module docstring)."""

    def __init__(self, *, history: int = 120, recent: int = 50,
                 rate_window: float = 10.0) -> None:
        self.history = history
        self.rate_window = rate_window
        self._load: dict[str, collections.deque[list[float]]] = {}
        self._regs: collections.deque[list[float]] = collections.deque(maxlen=history)
        self._dialogs: collections.deque[list[float]] = collections.deque(maxlen=history)
        self._accepted: tuple[float, float] | None = None  # (time, summed counter)
        self._buckets: dict[str, dict[int, int]] = {}
        self.recent: collections.deque[dict[str, Any]] = collections.deque(maxlen=recent)

    # -- events ----------------------------------------------------------------------------
    def on_event(self, name: str, params: Mapping[str, Any], *, now: float,
                 service: str = "", node: str = "", raised: float | None = None) -> None:
        """Counts an event at ``now`` (rates) and keeps it when it is one the page lists
        (shown at ``raised``, the time its process raised it, when known)."""
        second = int(now)
        buckets = self._buckets.setdefault(name, {})
        buckets[second] = buckets.get(second, 0) + 1
        if len(buckets) > self.rate_window + 2:
            self._prune(buckets, now)
        if name.startswith(RECENT_KINDS):
            self.recent.appendleft({"time": now if raised is None else raised,
                                    "name": name, "params": dict(params),
                                    "service": service, "node": node})

    def _prune(self, buckets: dict[int, int], now: float) -> None:
        oldest = int(now - self.rate_window)
        for second in [s for s in buckets if s <= oldest]:
            del buckets[second]

    def event_rates(self, now: float) -> list[dict[str, Any]]:
        """Events per second by name over the last ``rate_window`` seconds."""
        out = []
        for name, buckets in list(self._buckets.items()):
            self._prune(buckets, now)
            if not buckets:
                del self._buckets[name]
                continue
            out.append({"name": name,
                        "per_second": round(sum(buckets.values()) / self.rate_window, 2)})
        return sorted(out, key=lambda r: (-r["per_second"], r["name"]))

    # -- polls -----------------------------------------------------------------------------
    def update(self, poll: Poll, now: float) -> dict[str, Any]:
        """Takes one poll's answers in and returns the view."""
        return {
            "time": now,
            "services": self._services(poll, now),
            "clusters": self._clusters(poll),
            "load": self._load_view(poll, now),
            "registrations": self._registrations(poll, now),
            "dialogs": self._dialog_view(poll, now),
            "events": {"rates": self.event_rates(now), "recent": list(self.recent)},
        }

    def _services(self, poll: Poll, now: float) -> list[dict[str, Any]]:
        by_service: dict[str, list[dict[str, Any]]] = {}
        for inst in poll.instances:
            if inst.service == "supervisor":
                continue
            started = inst.meta.get("started", "")
            by_service.setdefault(inst.service, []).append({
                "id": inst.id,
                "address": f"{inst.address}:{inst.port}",
                "pid": int(inst.meta.get("pid", "0") or 0),
                "version": inst.meta.get("version", ""),
                "health": "passing" if inst.passing else "critical",
                "ps_id": poll.ps_ids.get(inst.id),
                "cluster": int(inst.meta["cluster_id"]) if "cluster_id" in inst.meta else None,
                "node": int(inst.meta["cluster_node_id"])
                if "cluster_node_id" in inst.meta else None,
                "uptime": max(int(now - int(started)), 0) if started.isdigit() else None,
            })
        return [{"name": name, "instances": sorted(items, key=lambda i: (
                    i["node"] or 0, i["id"]))}
                for name, items in sorted(by_service.items())]

    def _clusters(self, poll: Poll) -> list[dict[str, Any]]:
        services = {int(i.meta["cluster_id"]): i.service for i in poll.instances
                    if "cluster_id" in i.meta}
        known: dict[int, dict[int, str]] = {}  # cluster -> node -> description
        answering: dict[int, set[int]] = {}
        links: dict[int, list[dict[str, Any]]] = {}
        for view in (poll.clusters or {}).get("Clusters", []):
            cid, me = int(view["cluster_id"]), view.get("local_node_id")
            nodes = known.setdefault(cid, {})
            if me is not None:
                answering.setdefault(cid, set()).add(int(me))
                nodes.setdefault(int(me), "")
            for peer in view.get("Nodes", []):
                pid = int(peer["node_id"])
                nodes[pid] = str(peer.get("description", "")) or nodes.get(pid, "")
                if me is None:
                    continue
                hop = str(peer.get("next_hop", "none"))
                links.setdefault(cid, []).append({
                    "from": int(me), "to": pid, "state": peer.get("link_state", "Down"),
                    "via": int(hop) if hop.isdigit() and int(hop) != pid else None})
        for inst in poll.instances:  # a node registered but not answering yet
            if "cluster_id" in inst.meta and "cluster_node_id" in inst.meta:
                known.setdefault(int(inst.meta["cluster_id"]), {}).setdefault(
                    int(inst.meta["cluster_node_id"]), "")
        tags = self._tags(poll.shtags or ())
        out = []
        for cid in sorted(known):
            out.append({
                "id": cid, "service": services.get(cid, ""),
                "nodes": [{"id": n, "answering": n in answering.get(cid, set()),
                           "description": d} for n, d in sorted(known[cid].items())],
                "links": sorted(links.get(cid, []), key=lambda x: (x["from"], x["to"])),
                "tags": tags.get(cid, []),
            })
        return out

    @staticmethod
    def _tags(shtags: Iterable[Mapping[str, Any]]) -> dict[int, list[dict[str, Any]]]:
        found: dict[tuple[int, str], dict[str, set[int]]] = {}
        for row in shtags:
            key = (int(row["Cluster"]), str(row["Tag"]))
            states = found.setdefault(key, {"active": set(), "backup": set()})
            if "Node" in row:
                states.setdefault(str(row["State"]), set()).add(int(row["Node"]))
        out: dict[int, list[dict[str, Any]]] = {}
        for (cid, tag), states in sorted(found.items()):
            out.setdefault(cid, []).append({
                "tag": f"{tag}/{cid}", "holders": sorted(states["active"]),
                "backups": sorted(states["backup"] - states["active"])})
        return out

    def _load_view(self, poll: Poll, now: float) -> list[dict[str, Any]]:
        names = {poll.ps_ids[i.id]: i for i in poll.instances if i.id in poll.ps_ids}
        out = []
        seen = set()
        for ps_id, answer in sorted(poll.stats.items()):
            inst = names.get(ps_id)
            if inst is None:
                continue
            values = [_num(answer.get(f"load:{k}-all")) for k in ("load", "load1m", "load10m")]
            series = self._load.setdefault(inst.id, collections.deque(maxlen=self.history))
            series.append([now, *values])
            seen.add(inst.id)
            label = inst.service
            if "cluster_node_id" in inst.meta:
                label += f" node {inst.meta['cluster_node_id']}"
            out.append({"ps_id": ps_id, "name": label, "id": inst.id,
                        "load": values[0], "load1m": values[1], "load10m": values[2],
                        "series": [list(p) for p in series]})
        for gone in set(self._load) - seen:  # a process that went away: forget its plot
            del self._load[gone]
        return out

    def _shared_count(self, poll: Poll, service: str, stat: str
                      ) -> tuple[float, list[dict[str, Any]]]:
        """A table's size over the instances of ``service``: a cluster counts once (its
        largest node), unclustered instances add up (see the module docstring)."""
        per: list[dict[str, Any]] = []
        clusters: dict[str, float] = {}
        total = 0.0
        for inst in poll.instances:
            ps_id = poll.ps_ids.get(inst.id)
            if inst.service != service or ps_id is None or ps_id not in poll.stats:
                continue
            value = _num(poll.stats[ps_id].get(stat))
            per.append({"id": inst.id, "node": inst.meta.get("cluster_node_id"),
                        "users" if service == "registrar" else "active": value})
            cluster = inst.meta.get("cluster_id")
            if cluster is None:
                total += value
            else:
                clusters[cluster] = max(clusters.get(cluster, 0.0), value)
        return total + sum(clusters.values()), sorted(per, key=lambda p: p["id"])

    def _registrations(self, poll: Poll, now: float) -> dict[str, Any]:
        users, per = self._shared_count(poll, "registrar", "usrloc:registered_users")
        accepted = sum(_num(poll.stats[poll.ps_ids[i.id]].get("registrar:accepted_regs"))
                       for i in poll.instances
                       if i.service == "registrar" and poll.ps_ids.get(i.id) in poll.stats)
        rate = 0.0
        if self._accepted is not None and now > self._accepted[0]:
            grown = accepted - self._accepted[1]
            rate = (grown if grown >= 0 else accepted) / (now - self._accepted[0])
        self._accepted = (now, accepted)
        self._regs.append([now, users, round(rate, 2)])
        return {"users": users, "per_instance": per, "rate": round(rate, 2),
                "series": [list(p) for p in self._regs]}

    def _dialog_view(self, poll: Poll, now: float) -> dict[str, Any] | None:
        stat = "dialog:active_dialogs"
        if not any(i.service == "dialog" and stat in poll.stats.get(poll.ps_ids.get(i.id, -1), {})
                   for i in poll.instances):
            self._dialogs.clear()  # no dialog service, or one that does not count yet
            return None
        active, _ = self._shared_count(poll, "dialog", stat)
        self._dialogs.append([now, active])
        return {"active": active, "series": [list(p) for p in self._dialogs]}


__all__ = ["ConsoleModel", "InstanceInfo", "Poll"]
