"""The presence service process: the sans-IO core (services/presence/core.py) behind a
gRPC face for the edges, its store, its timers and the NOTIFYs it sends.

* `Handle` (contracts/proto/sipmesh/presence/v1/presence.proto): the edge hands over a
  PUBLISH or SUBSCRIBE; the core decides; what changed is written to the store *before*
  the answer goes back (kill -9 loses nothing a phone was told), then events are raised and
  the NOTIFYs sent.
* NOTIFYs go through the Uac API of the edge that took the SUBSCRIBE (another edge from
  discovery when that one is gone), one at a time per subscription so their CSeqs arrive
  in order; one answered 481 or 408 ends its subscription (RFC 6665 §4.2.2).
* A timer (every `[presence] timer_interval`) expires publications and subscriptions.
* After an unclean stop (no clean-stop marker beside the store: kill -9, a crash) every
  subscription this node owns gets a NOTIFY with the current state once it is up
  (`PresenceCore.renotify`): a NOTIFY started before the kill (the first one after a 200,
  or those of a PUBLISH answered just before) may never have left. A clean stop drains
  its NOTIFYs and writes the marker, so a rolling restart sends none of these. Each
  NOTIFY's final answer is recorded in the store (a 'notified' row: the CSeq answered,
  written in batches after the answers), so only the subscriptions whose last NOTIFY was
  started and never answered get one (`pending`).
* A node that takes a sharing tag because its holder was declared down (not by MI)
  reads the whole store and redoes the dead node's pending NOTIFYs of that tag's
  subscriptions the same way (`tag_changed`): in a shared-database cluster a kill -9 of
  the holder between a PUBLISH's 200 and its NOTIFYs loses none of them.
* Clustering (`[presence] cluster`, OpenSIPS 2.4's shared-database mode): every node
  reads a presentity's rows from the shared store before acting on it, NOTIFYs a change
  only to the subscriptions whose sharing tag is active on it, and tells the other nodes
  which presentity changed (capability `presence-notify`, a hint: they re-read it and
  notify their own watchers). The immediate NOTIFY of a SUBSCRIBE comes from the node that
  took it. Only a subscription's owner expires it. A hint sent while a node's links are
  down (it is restarting, or it just started) is lost, so a (re)started node reads the
  whole store again once its links are up (the capability's sync, which carries no data:
  `catch_up`) and is ready (`/ready`, meta `ready`) only after that: a change another
  node made between its start-up load and its links coming up is not missed (issue 20:
  a rolling restart under PUBLISH load left such publications out of a node's table).
  The same read runs each time another node becomes reachable (`peer_up`): a seed that
  came back alone is synced by `seed_fallback_interval` before its links are up, and a
  partition loses hints too. A read that finds a presentity's state changed NOTIFYs the
  watchers this node owns, as the lost hint would have. The links come up one side at a
  time: the restarted node's first (its read then runs), the other's up to a redial
  later, and hints the other sends meanwhile are refused for its link; those are sent
  again at the next tick (`_unannounced`).
* Federation (`cluster_mode = "federation"`, OpenSIPS 2.4 cluster_federation_mode=1):
  each node keeps its own store and notifies its own watchers; what a PUBLISH changed is
  broadcast (CL_PRESENCE_PUBLISH), kept by a node only while it has watchers of that
  presentity; a new subscription to a presentity the node knows nothing of asks the
  others (PRES_QUERY), and only the node that took the PUBLISH answers.
* MI: pres_phtable_list, subs_phtable_list, refresh_watchers, cleanup, pres_expose
  (services/presence/mi.py); events E_PRESENCE_PUBLISH, E_PRESENCE_EXPOSED; statistics
  `presence:`; /metrics histograms of request handling and store writes.

`serve()` prints one line when ready:

    presence ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT pid PID
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import secrets
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import structlog
from prometheus_client import Histogram

from contracts.generated.sipmesh.presence.v1 import presence_pb2 as pb
from contracts.generated.sipmesh.presence.v1 import presence_pb2_grpc as pb_grpc
from services.presence.config import PresenceConfig
from services.presence.core import Meta, Outcome, PresenceCore
from services.presence.publications import Limits as PubLimits
from services.presence.publications import Publication
from services.presence.store import PresenceStore, notified_row, pub_row, sub_row
from services.presence.subscriptions import Limits, Notify, Policy, Subscription
from shared.cluster.state import SEND_ERROR, UNREACHABLE
from shared.rpc.discovered import EdgeUac
from shared.sip import Request, SipParseError, parse_message

SERVICE = "sipmesh.presence.v1.Presence"
CAPABILITY = "presence-notify"
# Hints kept for another try (`_unannounced`) at most: past that, a node out that long is
# declared down, and reads the store when it is back (`peer_up`).
MAX_UNANNOUNCED = 10_000
log = structlog.get_logger("presence")


class UacClient(EdgeUac):
    """The edges' Uac API (contracts/proto/sipmesh/edge/v1/uac.proto) for NOTIFYs."""

    def __init__(self, registry: Any = None, service: str = "edge",
                 timeout: float = 32.0, max_in_flight: int = 256) -> None:
        super().__init__(registry, service, timeout)
        # NOTIFYs in flight at once: a PUBLISH with thousands of watchers must not open
        # thousands of streams on one edge at once (under load they came back CANCELLED).
        self._window = asyncio.Semaphore(max_in_flight)

    async def send(self, notify: Notify) -> tuple[int, str]:
        """(final status, reason); 503 when no edge could send it."""
        async with self._window:
            return await self.send_request(notify.edge_uac, self.request(
                "NOTIFY", notify.ruri, route=notify.route, next_hop=notify.next_hop,
                headers=notify.headers, body=notify.body))


class PresenceService:
    def __init__(self, config: PresenceConfig, *, store: PresenceStore | None,
                 events: Any = None, uac: UacClient | None = None, metrics: Any = None,
                 node_id: int = 0, cluster: Any = None) -> None:
        self.config = config
        self.cluster = cluster
        self.federation = cluster is not None and config.cluster_mode == "federation"
        self.shared = cluster is not None and store is not None and not self.federation
        self.node_id = node_id
        self._presentity_locks: dict[str, asyncio.Lock] = {}
        self.core = PresenceCore(
            pub_limits=PubLimits(config.min_expires, config.max_expires_publish,
                                 config.default_expires),
            sub_limits=Limits(config.min_expires, config.max_expires_subscribe,
                              config.default_expires),
            policy=Policy(config.policy, config.allowed_map()), node=node_id, owns=self.owns)
        self.store = store
        self.events = events
        self.uac = uac or UacClient()
        self._write_lock = asyncio.Lock()
        self._notify_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._timer: asyncio.Task[None] | None = None
        # Shared database: the whole store read again once the links are up (catch_up);
        # the presentities hinted while that read runs are read again after it.
        self.caught_up = not self.shared
        self._hinted: set[str] | None = None
        # This node's own requests on a presentity, under way (`_changing`) or ended while
        # a whole-store read runs (`_touched`): the read's snapshot may predate their
        # write, so those presentities are read again after it rather than left as the
        # snapshot has them.
        self._changing: set[str] = set()
        self._touched: set[str] | None = None
        # Presentities whose hint did not reach a node counted as up (its link is being
        # made again: it restarted, and may have read the store before the change): sent
        # again at the next tick.
        self._unannounced: set[str] = set()
        self._sync_done = False  # the capability's sync is done: a read makes us ready
        self._read_again = False  # a read of the whole store is wanted (after this one)
        self._reading: asyncio.Task[None] | None = None
        # Set by serve() when the last stop was not clean: the first read of the store
        # (load, or the shared database's catch-up) is followed by `renotify`.
        self.unclean = False
        # Sharing tags taken from a dead holder: the next read of the store redoes its
        # pending NOTIFYs of them.
        self._redo_tags: set[str] = set()
        # NOTIFYs of this node not yet answered, by subscription (never redone meanwhile:
        # their answer is still to come), and the answers not yet written.
        self._in_flight: dict[str, int] = {}
        self._confirms: dict[str, Subscription] = {}
        self._writing: set[str] = set()  # (the batch of answers being written)
        self._confirming: asyncio.Task[None] | None = None
        self.counters = {"publish_received": 0, "subscribe_received": 0,
                         "notify_sent": 0, "notify_failed": 0, "store_failures": 0,
                         "publications_expired": 0, "subscriptions_expired": 0}
        self.handle_histogram = Histogram(
            "sipmesh_presence_request_seconds", "PUBLISH/SUBSCRIBE handling (store included)",
            ["method"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=metrics) if metrics is not None else None
        self.store_histogram = Histogram(
            "sipmesh_presence_store_seconds", "presence store write latency",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=metrics) if metrics is not None else None
        self.notify_histogram = Histogram(
            "sipmesh_presence_notify_seconds", "NOTIFY round trip through an edge",
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=metrics) if metrics is not None else None

    # -- state ----------------------------------------------------------------------------
    def owns(self, sub: Subscription) -> bool:
        """This node sends the subscription's NOTIFYs: no cluster, or its tag is active."""
        if self.cluster is None or self.federation:
            return True  # federation: each node notifies its own watchers
        shtags = self.cluster.shtags
        tag = sub.sharing_tag
        return bool(tag) and tag in shtags.tags and bool(shtags.is_active(tag))

    def _lock(self, presentity: str) -> asyncio.Lock:
        return self._presentity_locks.setdefault(presentity, asyncio.Lock())

    async def _reload(self, presentity: str) -> None:
        """A presentity's rows as the shared store has them (what other nodes wrote)."""
        assert self.store is not None
        pubs, subs = await self.store.load_presentity(presentity)
        self.core.replace_presentity(presentity, pubs, subs)

    async def _reread(self, presentity: str) -> None:
        async with self._lock(presentity):
            try:
                await self._reload(presentity)
            except Exception as exc:  # the next request on it reads it again anyway
                log.error("presence_reread_failed", presentity=presentity, error=repr(exc))

    def _announce(self, presentities: set[str]) -> None:
        if self.cluster is None:
            return
        for presentity in sorted(presentities):
            sent = self.cluster.broadcast(CAPABILITY,
                                          json.dumps({"presentity": presentity}).encode())
            # A node restarted and not yet reconnected from this side stays reachable for
            # a few pings, and the hint is refused for its link (SEND_ERROR). Its own
            # link came up first, and its read of the store may predate this change.
            if sent in (UNREACHABLE, SEND_ERROR) and \
                    len(self._unannounced) < MAX_UNANNOUNCED:
                self._unannounced.add(presentity)

    def apply_update(self, node: int, payload: bytes) -> None:
        """A message of another node: a hint that a presentity changed (shared database),
        or in federation a publication (`pub`) or a query for one (`query`)."""
        try:
            message = json.loads(payload)
            presentity = str(message["presentity"])
            kind = str(message.get("t", "hint"))
        except (ValueError, KeyError, TypeError):
            return
        if kind == "hint":
            if self._hinted is not None:
                self._hinted.add(presentity)
            self._spawn(self._remote_change(presentity))
        elif kind == "pub" and self.federation:
            self._spawn(self._federated_publish(presentity, message))
        elif kind == "query" and self.federation:
            self._answer_query(node, presentity)

    # -- federation (OpenSIPS 2.4 cluster_federation_mode) ---------------------------------
    def _broadcast(self, message: dict[str, Any], dst: int | None = None) -> None:
        if self.cluster is None:
            return
        data = json.dumps(message).encode()
        if dst is None:
            self.cluster.broadcast(CAPABILITY, data)
        else:
            self.cluster.send(CAPABILITY, dst, data)

    def _federate(self, presentity: str, outcome: Outcome) -> None:
        """CL_PRESENCE_PUBLISH: what a PUBLISH here changed goes to every node; a new
        subscription to a presentity we know nothing of asks the others (PRES_QUERY)."""
        if outcome.put_pubs or outcome.del_pubs:
            self._broadcast({"t": "pub", "presentity": presentity,
                             "put": [p.to_record() for p in outcome.put_pubs],
                             "del": list(outcome.del_pubs)})
        if outcome.put_subs and not self.core.pubs.of(presentity) and any(
                s.local_cseq == 1 for s in outcome.put_subs):
            self._broadcast({"t": "query", "presentity": presentity})

    def _answer_query(self, node: int, presentity: str) -> None:
        """Only the node that took the PUBLISH (not a copy) answers, unicast."""
        mine = [p for p in self.core.pubs.of(presentity) if p.node == self.node_id]
        if mine:
            self._broadcast({"t": "pub", "presentity": presentity,
                             "put": [p.to_record() for p in mine], "del": []}, dst=node)

    async def _federated_publish(self, presentity: str, message: dict[str, Any]) -> None:
        async with self._lock(presentity):
            try:
                before = self.core.pubs.compose(presentity)
                out = Outcome(200)
                for etag in message.get("del", []):
                    if self.core.pubs.remove(str(etag)) is not None:
                        out.del_pubs.append(str(etag))
                if self.core.subs.watchers_of(presentity):
                    for record in message.get("put", []):
                        pub = Publication.from_record(record)
                        self.core.pubs.add(pub)
                        out.put_pubs.append(pub)
                else:
                    # No watcher here: keep no copy (OpenSIPS forces expires=0 on it).
                    for pub in self.core.pubs.of(presentity):
                        if pub.node != self.node_id:
                            self.core.pubs.remove(pub.etag)
                            out.del_pubs.append(pub.etag)
                if self.core.pubs.compose(presentity) != before:
                    out.merge(self.core.state_changed(presentity, time.time()))
                await self.apply(out)
            except Exception as exc:
                log.error("presence_federation_failed", presentity=presentity,
                          error=repr(exc))

    async def _remote_change(self, presentity: str) -> None:
        async with self._lock(presentity):
            try:
                await self._reload(presentity)
                await self.apply(self.core.state_changed(presentity, time.time()))
            except Exception as exc:
                log.error("presence_remote_change_failed", presentity=presentity,
                          error=repr(exc))

    def catch_up(self) -> None:
        """The cluster links are up (the capability's sync is done): read the store again
        (see the module docstring), then take traffic (`caught_up`)."""
        self._sync_done = True
        self._read_store()

    def peer_up(self, node: int, reachable: bool) -> None:
        """Another node became reachable: the hints it sent meanwhile were lost, so the
        store is read again (shared database)."""
        if reachable and self.shared:
            log.info("presence_peer_up", node=node)
            self._read_store()

    def tag_changed(self, tag: str, active: bool, reason: str) -> None:
        """A sharing tag moved (the clustering engine's listener). Taken over from a
        holder declared down, the dead node's NOTIFYs of the tag's subscriptions that were
        started and never answered may never have left: the store is read (what it wrote
        last) and they are redone once (`PresenceCore.renotify`). A move by MI leaves the
        old holder running: its NOTIFYs get their answers there."""
        if not (self.shared and active) or reason == "MI command":
            return
        log.info("presence_tag_taken", tag=tag, reason=reason)
        self._redo_tags.add(tag)
        self._read_store()

    def _read_store(self) -> None:
        """One read of the whole store after this call: reads asked for while one runs
        become one more, run after it (whose snapshot may predate the ask)."""
        self._read_again = True
        if self._reading is None or self._reading.done():
            self._reading = asyncio.get_running_loop().create_task(self._read_loop())
            self._tasks.add(self._reading)
            self._reading.add_done_callback(self._tasks.discard)

    async def _read_loop(self) -> None:
        while self._read_again:
            self._read_again = False
            await self._catch_up(ready=self._sync_done)

    def _owned_states(self) -> dict[tuple[str, str], bytes]:
        """The composed state of each (presentity, event) this node has watchers of."""
        return {(s.presentity, s.event): self.core.pubs.compose(s.presentity, s.event)
                for s in self.core.subs if self.core.owns(s)}

    async def _catch_up(self, ready: bool = True) -> None:
        assert self.store is not None
        self._hinted = set()
        self._touched = set()
        before: dict[tuple[str, str], bytes] = {}
        changed: list[tuple[str, str]] = []
        touched: set[str] = set()
        try:
            pubs, subs = await self.store.load()
            before = self._owned_states()
            # Replaced in one go (no await): a hint's reload running meanwhile may have
            # read newer rows than this snapshot: those presentities are read once more.
            rows: dict[str, tuple[list[Publication], list[Subscription]]] = {
                p: ([], []) for p in {p.presentity for p in self.core.pubs}
                | {s.presentity for s in self.core.subs}}
            for pub in pubs:
                rows.setdefault(pub.presentity, ([], []))[0].append(pub)
            for sub in subs:
                rows.setdefault(sub.presentity, ([], []))[1].append(sub)
            for presentity, (p_rows, s_rows) in rows.items():
                self.core.replace_presentity(presentity, p_rows, s_rows)
            # A request of ours that wrote during the read (or is writing now): the
            # snapshot may miss its rows, which stay in the store; read them once more.
            touched = self._touched | self._changing
            changed = [key for key, state in self._owned_states().items()
                       if before.get(key, b"") != state]
            again = self._hinted
            tags, self._redo_tags = self._redo_tags, set()
            if tags:  # (on the rows just read, before any await)
                await self._redo(self.core.renotify(time.time(), tags=tags,
                                                    busy=self._busy()),
                                 "presence_tag_renotified", tags=sorted(tags))
        except Exception as exc:  # the store away: the hints and the next reloads repair
            log.error("presence_catch_up_failed", error=repr(exc))
            again = self._hinted or set()
        finally:
            self._hinted = None
            self._touched = None
        for presentity in sorted(again):
            self._spawn(self._remote_change(presentity))
        for presentity in sorted(touched - again):
            self._spawn(self._reread(presentity))
        for presentity, event in sorted(changed):
            if presentity not in again:  # (that one's re-read notifies)
                self._spawn(self._notify_state(presentity, event))
        log.info("presence_caught_up", publications=len(self.core.pubs),
                 subscriptions=len(self.core.subs), changed=len(changed))
        if ready:
            self.caught_up = True
            await self.renotify_if_unclean()

    async def renotify_if_unclean(self) -> int:
        """After an unclean stop, once: the current state to every subscription this
        node owns (see `PresenceCore.renotify`). Returns how many NOTIFYs were started."""
        if not self.unclean:
            return 0
        self.unclean = False
        return await self._redo(self.core.renotify(time.time(), busy=self._busy()),
                                "presence_renotified")

    def _busy(self) -> set[str]:
        """Subscriptions whose last NOTIFY from here is in flight, or answered and not yet
        recorded in the store (the rows just read do not say so yet): no redo of them."""
        return set(self._in_flight) | set(self._confirms) | self._writing

    async def _redo(self, outcome: Outcome, event: str, **fields: Any) -> int:
        try:
            await self.apply(outcome)
        except Exception as exc:  # the NOTIFYs were not started: the rows say CSeq moved
            log.error("presence_store_failed", error=repr(exc))
            return 0
        log.info(event, subscriptions=len(outcome.notifies), **fields)
        return len(outcome.notifies)

    async def _notify_state(self, presentity: str, event: str) -> None:
        async with self._lock(presentity):
            try:
                await self.apply(self.core.state_changed(presentity, time.time(), event))
            except Exception as exc:
                log.error("presence_remote_change_failed", presentity=presentity,
                          error=repr(exc))

    async def load(self) -> tuple[int, int]:
        if self.store is None:
            return 0, 0
        pubs, subs = await self.store.load()
        for pub in pubs:
            self.core.pubs.add(pub)
        for sub in subs:
            self.core.subs.add(sub)
        return len(pubs), len(subs)

    def statistics(self) -> dict[str, int]:
        return {**self.counters, "presentities": len(self.core.pubs.by_presentity),
                "publications": len(self.core.pubs), "active_watchers": len(self.core.subs)}

    # -- requests -------------------------------------------------------------------------
    async def handle(self, data: bytes, meta: Meta) -> tuple[int, str, list[tuple[str, str]]]:
        started = time.perf_counter()
        try:
            request = parse_message(data)
        except SipParseError as exc:
            return 400, f"Bad Request: {exc}"[:100], []
        if not isinstance(request, Request):
            return 400, "Not A Request", []
        method = request.method
        if method == "PUBLISH":
            self.counters["publish_received"] += 1
        elif method == "SUBSCRIBE":
            self.counters["subscribe_received"] += 1
        if self.cluster is not None and not meta.sharing_tag:
            meta = dataclasses.replace(meta, sharing_tag=self.config.sharing_tag)
        presentity = self.core.presentity_of(request) if self.cluster is not None else None
        try:
            if presentity is None:
                outcome = self.core.handle(request, meta, time.time(), secrets.token_hex(8))
                await self.apply(outcome)
            elif self.federation:
                async with self._lock(presentity):
                    outcome = self.core.handle(request, meta, time.time(),
                                               secrets.token_hex(8))
                    await self.apply(outcome)
                self._federate(presentity, outcome)
            elif not self.shared:
                outcome = self.core.handle(request, meta, time.time(), secrets.token_hex(8))
                await self.apply(outcome)
            else:
                async with self._lock(presentity):
                    self._changing.add(presentity)
                    try:
                        await self._reload(presentity)
                        outcome = self.core.handle(request, meta, time.time(),
                                                   secrets.token_hex(8))
                        await self.apply(outcome)
                    finally:
                        self._changing.discard(presentity)
                        if self._touched is not None:
                            self._touched.add(presentity)
                if outcome.put_pubs or outcome.del_pubs:
                    self._announce({presentity})
        except Exception as exc:
            log.error("presence_store_failed", call_id=request.call_id, error=repr(exc))
            return 500, "Store Unavailable", [("Retry-After", "5")]
        log.info("presence_request", method=method, call_id=request.call_id,
                 status=outcome.status, ruri=request.uri)
        if self.handle_histogram is not None:
            self.handle_histogram.labels(method.lower()).observe(
                time.perf_counter() - started)
        return outcome.status, outcome.reason, list(outcome.headers)

    async def apply(self, outcome: Outcome) -> None:
        """Store what changed (raising when the store fails), then raise the events and
        start the NOTIFYs."""
        await self._write(outcome)
        if self.events is not None:
            for name, params in outcome.events:
                self.events.publish(name, params)
        for notify in outcome.notifies:
            self._in_flight[notify.key] = self._in_flight.get(notify.key, 0) + 1
            self._spawn(self._send(notify))

    async def _write(self, outcome: Outcome) -> None:
        if self.store is None:
            return
        deletes = [("pub", e) for e in outcome.del_pubs] + [
            (kind, k) for k in outcome.del_subs for kind in ("sub", "notified")]
        upserts = [pub_row(p) for p in outcome.put_pubs]
        gone = set(outcome.del_subs)
        upserts += [sub_row(s) for s in {s.key: s for s in outcome.put_subs}.values()
                    if s.key not in gone]
        if not deletes and not upserts:
            return
        started = time.perf_counter()
        async with self._write_lock:  # in order: the last write of a row wins
            try:
                await self.store.write(upserts, deletes)
            except Exception:
                self.counters["store_failures"] += 1
                raise
        if self.store_histogram is not None:
            self.store_histogram.observe(time.perf_counter() - started)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, notify: Notify) -> None:
        try:
            await self._send_one(notify)
        finally:
            left = self._in_flight.get(notify.key, 1) - 1
            if left > 0:
                self._in_flight[notify.key] = left
            else:
                self._in_flight.pop(notify.key, None)

    async def _send_one(self, notify: Notify) -> None:
        lock = self._notify_locks.setdefault(notify.key, asyncio.Lock())
        async with lock:  # one NOTIFY at a time per subscription: CSeqs in order
            started = time.perf_counter()
            status, reason = await self.uac.send(notify)
            if self.notify_histogram is not None:
                self.notify_histogram.observe(time.perf_counter() - started)
        if not lock.locked() and notify.terminated:
            self._notify_locks.pop(notify.key, None)
        if 200 <= status < 300:
            self.counters["notify_sent"] += 1
        else:
            self.counters["notify_failed"] += 1
            log.warning("presence_notify_failed", call_id=notify.call_id, status=status,
                        reason=reason, watcher=notify.watcher, presentity=notify.presentity)
            done = self.core.notify_failed(notify.key, status, time.time())
            if done.del_subs:
                self._notify_locks.pop(notify.key, None)
                with contextlib.suppress(Exception):
                    await self._write(done)
                return
        if not notify.terminated:
            self._confirm(notify)

    def _confirm(self, notify: Notify) -> None:
        """Records that a NOTIFY got its answer (no redo after a death), in batches: one
        write for the answers that came in while the previous one ran. One lost with the
        process costs a repeated NOTIFY of the full state, nothing more."""
        sub = self.core.confirm(notify.key, notify.cseq)
        if sub is None or self.store is None:
            return
        self._confirms[sub.key] = sub
        if self._confirming is None or self._confirming.done():
            self._confirming = asyncio.get_running_loop().create_task(self._write_confirms())

    async def _write_confirms(self) -> None:
        assert self.store is not None
        while self._confirms:
            batch, self._confirms = self._confirms, {}
            self._writing = set(batch)
            try:
                async with self._write_lock:  # after the row writes started before it
                    await self.store.confirm([notified_row(s) for s in batch.values()])
            except Exception as exc:  # a redo after a death, at worst
                self.counters["store_failures"] += 1
                log.warning("presence_confirm_failed", error=repr(exc), notifies=len(batch))
            finally:
                self._writing = set()

    # -- timers ---------------------------------------------------------------------------
    async def tick(self, now: float | None = None) -> None:
        now = time.time() if now is None else now
        if self._unannounced:  # hints a node missed while its link was made again
            again, self._unannounced = self._unannounced, set()
            self._announce(again)
        if self.shared:
            assert self.store is not None
            # What is due, here or in the shared store, is read again first: another node
            # may have refreshed it, or holds it and died.
            due = set(await self.store.due(now))
            due |= {p.presentity for p in self.core.pubs if p.expires_at <= now}
            due |= {s.presentity for s in self.core.subs if s.expires_at <= now}
            for presentity in sorted(due):
                async with self._lock(presentity):
                    await self._reload(presentity)
        outcome = self.core.tick(now)
        self.counters["publications_expired"] += len(outcome.del_pubs)
        self.counters["subscriptions_expired"] += len(outcome.del_subs)
        try:
            await self.apply(outcome)
        except Exception as exc:  # the rows go at the next write; the state is in memory
            log.error("presence_store_failed", error=repr(exc))
            return
        self._announce(set(outcome.changed))

    async def _timer_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.timer_interval)
            try:
                await self.tick()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # never let the timer die
                log.error("presence_timer_failed", error=repr(exc))

    def start(self) -> None:
        self._timer = asyncio.get_running_loop().create_task(self._timer_loop())

    async def stop(self, grace: float = 0.0) -> bool:
        """Stops the timer; the NOTIFYs (and re-reads) started by requests answered
        before the stop get `grace` s to finish (a drain: a watcher told 200 also gets
        its NOTIFY), what is left then is cancelled. True when nothing was left."""
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
        if grace > 0 and self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace)
        drained = not self._tasks
        for task in list(self._tasks):
            task.cancel()
        if self._confirming is not None:  # the answers that came in: no redo of them
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await asyncio.wait_for(self._confirming, max(grace, 1.0))
        await self.uac.close()
        return drained


class PresenceServicer(pb_grpc.PresenceServicer):
    def __init__(self, svc: PresenceService) -> None:
        self.svc = svc

    async def Handle(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        meta = Meta(source=request.source, local_contact=request.local_contact,
                    edge_uac=request.edge_uac, to_tag=request.to_tag,
                    sharing_tag=request.sharing_tag)
        status, reason, headers = await self.svc.handle(bytes(request.message), meta)
        return pb.SipAnswer(status=status, reason=reason,
                            headers=[pb.Header(name=n, value=v) for n, v in headers])


# =============================================================================================
# process entry points

def clean_stop_marker(location: str, node_id: int) -> Path:
    """The file whose presence says the last stop was clean (its NOTIFYs drained): beside
    the SQLite file, or, with a PostgreSQL store, in this node's state directory."""
    from services.presence.store import default_db
    from shared.store import is_postgres_dsn

    base = default_db(node_id) if is_postgres_dsn(location) else location
    return Path(f"{base}.clean")


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from shared.service.boot import arguments

    p = arguments("presence", "SipMesh presence service (PUBLISH, SUBSCRIBE)")
    p.add_argument("--db-url", help="SQLite file, postgresql:// DSN or none")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> PresenceConfig:
    from shared.cluster.config import host_cluster_config
    from shared.service.boot import load_settings

    config = load_settings(PresenceConfig, "presence", args,
                           ("grpc_port", "http_port", "db_url"))
    if config.cluster:  # checked with the rest: a pod name without an ordinal is one line
        host_cluster_config("presence")
    return config


async def serve(config: PresenceConfig) -> None:
    from services.presence.mi import register_mi
    from services.presence.store import default_db, open_store
    from shared.service.boot import GrpcApi, cluster_node, serve_announced, service_runtime

    runtime = service_runtime("presence", config,
                              drain_timeout=5.0 + 2 * config.drain_grace)
    runtime.declare_events("presence.#")
    cluster = None
    node_id = 0
    if config.cluster:
        cluster = cluster_node(runtime, "presence")
        node_id = cluster.id
    # Shared database: one store for all nodes; federation: each node its own.
    location = config.db_url or default_db(node_id if config.cluster_mode == "federation"
                                           else 0)
    store = None if config.db_url == "none" else open_store(location, table=config.table)
    svc = PresenceService(config, store=store, events=runtime.events,
                          uac=UacClient(runtime.registry, config.edge_service,
                                        config.uac_timeout),
                          metrics=runtime.metrics, node_id=node_id, cluster=cluster)
    if cluster is not None:
        # Hints only ("this presentity changed: read it again"): no data to sync. In the
        # shared database the sync (empty) still tells when the links are up: the node
        # then reads the store again (catch_up) before it is ready.
        cluster.register_capability(CAPABILITY, produce=lambda: [],
                                    apply_sync=lambda records: None,
                                    apply_update=svc.apply_update, needs_sync=svc.shared,
                                    on_sync_done=svc.catch_up if svc.shared else None)
        cluster.node_state_listeners.append(svc.peer_up)
        cluster.shtag_listeners.append(svc.tag_changed)
    register_mi(runtime, svc)
    runtime.stats.group("presence", svc.statistics)
    api = GrpcApi(runtime, config, SERVICE,
                  lambda s: pb_grpc.add_PresenceServicer_to_server(  # type: ignore[no-untyped-call]
                      PresenceServicer(svc), s))
    if svc.shared:
        runtime.ready_check("cluster_caught_up", lambda: svc.caught_up)

    marker = clean_stop_marker(location, node_id) if store is not None else None

    @runtime.on_start
    async def _start() -> None:
        if store is not None:
            await store.open()
        pubs, subs = await svc.load()
        runtime.log.info("presence_loaded", publications=pubs, subscriptions=subs)
        if marker is not None:
            # Taken away while running: only a stop that drained writes it back.
            svc.unclean = not marker.exists()
            marker.unlink(missing_ok=True)
        await api.start()
        if cluster is not None:
            await cluster.start()
            runtime.meta.update(cluster.meta())
        svc.start()
        if not svc.shared:  # (the shared database's catch-up does it once caught up)
            await svc.renotify_if_unclean()

    @runtime.on_stop
    async def _stop() -> None:
        await api.stop()
        drained = await svc.stop(config.drain_grace)  # and the NOTIFYs the RPCs started
        if cluster is not None:
            await cluster.stop()
        if store is not None:
            await store.close()
        if marker is not None and drained:  # NOTIFYs cancelled: the next start redoes them
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.touch()

    def line() -> str:
        extra = f" cluster {cluster.url} node {cluster.id}" if cluster is not None else ""
        return (f"presence ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
                f"pid {os.getpid()}{extra}")

    await serve_announced(runtime, line, ready=lambda: api.serving)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main("presence", lambda: load_config(_parse_args(argv)), serve)
