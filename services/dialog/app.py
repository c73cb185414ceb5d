"""Wiring of the dialog service: the sans-IO dialog table behind gRPC, MI, the stores, the
cluster and the event bus.

`DialogService` carries out what `services.dialog.table.DialogTable` decides:

* persistence -- every change is written to the dialog store (`[dialog] db_url`, a SQLite
  file by default) before the edge's events that caused it are acknowledged: an
  acknowledged event survives a kill -9 (the edge resends what was not acknowledged);
* replication -- over `shared.cluster` capability `dialog-dlg-repl`: each change made here
  is broadcast as a whole `DialogRecord` (idempotent, the higher rank wins), a purge as
  its key; a joining or restarting node pulls the whole table from a donor (full sync);
* ownership -- `owns(dialog)`: its sharing tag is active here, or rendezvous hashing over
  the synced nodes picked this node (services/dialog/ownership.py); the view is refreshed
  by the timer and a change makes the table re-check pending CDRs;
* CDRs -- written by the owner with the idempotent insert; only the insert that made the
  row raises E_ACC_CDR (answered calls) or E_ACC_MISSED_EVENT (missed ones); the row is
  marked `event_sent` once the event bus delivered it (outbox: a restarted node delivers
  its own unsent rows, a node taking over a dead writer's dialog delivers the dead node's);
* calls out -- BYEs (and CANCELs) through the edges' Uac API;
* events -- E_DLG_STATE_CHANGED with OpenSIPS's parameters on the node that saw the change.

`DialogServicer` is the gRPC face: the edge's `Track` stream (events acknowledged after they
are applied and stored, profile queries answered on the same stream) and the unary calls
other services use (`SetExtra`, `EndDialog`, `GetDialog`, `ProfileSize`).

`serve()` starts it all and prints one line when ready:

    dialog ready grpc 127.0.0.1:PORT http http://127.0.0.1:PORT pid PID [cluster URL node N]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import time
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any

import grpc
import structlog
from prometheus_client import Histogram

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb
from contracts.generated.sipmesh.dialog.v1 import dialog_pb2_grpc as pb_grpc
from services.dialog.byes import bye_requests, cancel_request
from services.dialog.cdr import Cdr, build_cdr
from services.dialog.config import DialogConfig
from services.dialog.model import Dialog, Key, decode, encode
from services.dialog.ownership import owner_key, rendezvous_owner
from services.dialog.store import CdrStore, DialogStore
from services.dialog.table import (
    Changed,
    DialogTable,
    Output,
    Purged,
    SendBye,
    SendCancel,
    StateChanged,
    WriteCdr,
)
from services.dialog.uac_client import UacClient

CAPABILITY = "dialog-dlg-repl"
SERVICE = "sipmesh.dialog.v1.Dialog"
_RECORD, _PURGE = b"D", b"P"


def event_params_of_row(row: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(event name, params) of a stored CDR row (the outbox's re-delivery)."""
    params: dict[str, Any] = dict(row["extra"])
    created = _epoch(row["created"])
    params.update({
        "method": row["method"], "from_tag": row["from_tag"], "to_tag": row["to_tag"],
        "callid": row["callid"], "sip_code": row["sip_code"], "sip_reason": row["sip_reason"],
        "time": _epoch(row["time"]), "duration": row["duration"],
        "ms_duration": row["ms_duration"], "setuptime": row["setuptime"], "created": created,
        "caller": row["caller"], "callee": row["callee"], "source_ip": row["source_ip"],
        "destination": row["destination"], "end_reason": row["end_reason"],
        "cdr_id": row["cdr_id"],
    })
    return ("E_ACC_MISSED_EVENT" if row["missed"] else "E_ACC_CDR"), params


def _epoch(iso: str) -> int:
    import datetime as dt

    return int(dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp())


class DialogService:
    """Carries out the table's effects (see the module docstring)."""

    def __init__(self, config: DialogConfig, *, node_id: int = 0,
                 store: DialogStore | None = None, cdrs: CdrStore, events: Any = None,
                 cluster: Any = None, uac: UacClient | None = None,
                 metrics: Any = None) -> None:
        self.config = config
        self.node_id = node_id
        self.store = store
        self.cdrs = cdrs
        self.events = events
        self.cluster = cluster
        self.uac = uac or UacClient()
        self.log = structlog.get_logger("dialog")
        self.table = DialogTable(config.table, node=node_id, owns=self.owns)
        self._upserts: dict[Key, Dialog] = {}
        self._deletes: set[Key] = set()
        self._commit_lock = asyncio.Lock()
        self._dirty = asyncio.Event()
        self._unsent: list[str] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._view: tuple[Any, ...] = ()
        self._nodes: tuple[int, ...] = ()
        self._synced = cluster is None
        self._cdr_queue: list[Dialog] = []
        self._cdr_wake = asyncio.Event()
        self.store_failures = 0
        self.uac_failures = 0
        self.cdr_failures = 0
        self.cdr_histogram = Histogram(
            "sipmesh_dialog_cdr_write_seconds", "CDR insert latency (per batch)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=metrics) if metrics is not None else None
        self.commit_histogram = Histogram(
            "sipmesh_dialog_commit_seconds", "dialog store write latency per batch",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5),
            registry=metrics) if metrics is not None else None

    # -- clock and ownership -----------------------------------------------------------------
    @staticmethod
    def now_ms() -> int:
        return int(time.time() * 1000)

    def owns(self, d: Dialog) -> bool:
        return self.owner_of(d) == self.node_id

    def owner_of(self, d: Dialog) -> int | None:
        cluster = self.cluster
        if cluster is None:
            return self.node_id
        tag = d.sharing_tag
        if tag and tag in cluster.shtags.tags:
            if cluster.shtags.is_active(tag):
                return int(self.node_id)
            return None  # another node holds the tag (or nobody yet)
        if not self._synced:
            return None
        return rendezvous_owner(owner_key(d.callid, d.from_tag), self._nodes)

    @property
    def ready(self) -> bool:
        """This node can take the edge's events: no cluster, or its table is synced."""
        return self.cluster is None or self.cluster.my_index(CAPABILITY)[0] >= 0

    def _refresh_view(self) -> bool:
        """Re-reads the cluster's synced nodes and tags; True when ownership may have moved."""
        cluster = self.cluster
        if cluster is None:
            return False
        synced = cluster.my_index(CAPABILITY)[0] >= 0
        others = cluster.nodes_having(CAPABILITY, synced_only=True)
        nodes = tuple(sorted({*others, self.node_id})) if synced else tuple(sorted(others))
        tags = tuple(sorted(t for t in cluster.shtags.tags if cluster.shtags.is_active(t)))
        view = (nodes, synced, tags)
        if view == self._view:
            return False
        self._view, self._nodes, self._synced = view, nodes, synced
        self.log.info("ownership_view", nodes=list(nodes), synced=synced, tags=list(tags))
        return True

    # -- effects ------------------------------------------------------------------------------
    def run(self, outputs: Iterable[Output]) -> None:
        for out in outputs:
            if isinstance(out, Changed):
                d = out.dialog
                key = d.key
                self._deletes.discard(key)
                self._upserts[key] = d
                if out.replicate:
                    self._replicate(_RECORD + (d.packed or encode(d)))
            elif isinstance(out, StateChanged):
                self._state_event(out)
            elif isinstance(out, Purged):
                self._upserts.pop(out.key, None)
                self._deletes.add(out.key)
                if out.replicate:
                    self._replicate(_PURGE + "\x00".join(out.key).encode())
            elif isinstance(out, WriteCdr):
                self._cdr_queue.append(out.dialog)
                self._cdr_wake.set()
            elif isinstance(out, SendBye):
                self._spawn(self._send(out.dialog, bye_requests(out.dialog, out.headers)))
            elif isinstance(out, SendCancel):
                self._spawn(self._send(out.dialog, [cancel_request(out.dialog)]))
        if self._upserts or self._deletes:
            self._dirty.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _replicate(self, payload: bytes) -> None:
        if self.cluster is not None:
            self.cluster.broadcast(CAPABILITY, payload)

    def _state_event(self, change: StateChanged) -> None:
        if self.events is None:
            return
        d = change.dialog
        self.events.publish("E_DLG_STATE_CHANGED", {
            "hash_entry": d.h_entry, "hash_id": d.h_id, "callid": d.callid,
            "from_tag": d.from_tag, "to_tag": d.to_tag, "old_state": int(change.old),
            "new_state": int(change.new)})

    async def commit(self) -> None:
        """Writes every pending change to the dialog store (one transaction); what was
        pending when this returns is stored. A failure keeps the changes pending."""
        async with self._commit_lock:
            if not self._upserts and not self._deletes:
                return
            upserts, self._upserts = self._upserts, {}
            deletes, self._deletes = self._deletes, set()
            if self.store is None:
                return
            started = time.perf_counter()
            try:
                await self.store.write(
                    [(d.callid, d.from_tag, int(d.state), d.packed or encode(d))
                     for d in upserts.values()], list(deletes))
            except Exception as exc:
                self.store_failures += 1
                self.log.warning("dialog_store_write_failed", error=repr(exc),
                                 rows=len(upserts) + len(deletes))
                for key, d in upserts.items():
                    if key not in self._deletes:
                        self._upserts.setdefault(key, d)
                for key in deletes:
                    if key not in self._upserts:
                        self._deletes.add(key)
                raise
            finally:
                if self.commit_histogram is not None:
                    self.commit_histogram.observe(time.perf_counter() - started)

    # -- CDRs ---------------------------------------------------------------------------------
    async def _write_cdrs(self) -> None:
        """Writes the CDRs the table asks for, in batches (what piled up while the last
        batch was written, up to 500): one statement and one round trip per batch."""
        while True:
            await self._cdr_wake.wait()
            self._cdr_wake.clear()
            while self._cdr_queue:
                batch, self._cdr_queue = self._cdr_queue[:500], self._cdr_queue[500:]
                await self._write_batch(batch)

    async def _write_batch(self, dialogs: list[Dialog]) -> None:
        cdrs = [build_cdr(d, self.node_id) for d in dialogs]
        started = time.perf_counter()
        try:
            made = await self.cdrs.insert_many(cdrs)
            for cdr in cdrs:
                if cdr.cdr_id in made:
                    self._raise_cdr(cdr)
                else:
                    await self._take_over_event(cdr)
        except Exception as exc:
            self.cdr_failures += len(dialogs)
            self.log.warning("cdr_write_failed", cdrs=len(dialogs), error=repr(exc))
            now = self.now_ms()
            for d in dialogs:
                self.run(self.table.cdr_failed(d.key, now))
            return
        finally:
            if self.cdr_histogram is not None:
                self.cdr_histogram.observe(time.perf_counter() - started)
        now = self.now_ms()
        for d, cdr in zip(dialogs, cdrs, strict=True):
            self.log.debug("cdr_written", callid=d.callid, sip_code=cdr.sip_code,
                           duration=cdr.ms_duration, end_reason=cdr.end_reason,
                           new=cdr.cdr_id in made)
            self.run(self.table.cdr_written(d.key, now))

    def _raise_cdr(self, cdr: Cdr) -> None:
        if self.events is None:
            return
        name = "E_ACC_MISSED_EVENT" if cdr.missed else "E_ACC_CDR"
        if self.events.publish(name, cdr.event_params()) is not None:
            self._unsent.append(cdr.cdr_id)

    async def _take_over_event(self, cdr: Cdr) -> None:
        """The row was there already: its writer died after the insert (the dialog is ours
        now). If that writer is gone and never delivered the event, deliver it here."""
        row = await self.cdrs.get(cdr.cdr_id)
        if row is None or row["event_sent"] or row["node"] == self.node_id:
            return
        cluster = self.cluster
        if cluster is not None and row["node"] in cluster.nodes_having(CAPABILITY):
            return  # its writer is alive: it delivers (or already did)
        self._publish_row(row)

    def _publish_row(self, row: dict[str, Any]) -> None:
        if self.events is None:
            return
        name, params = event_params_of_row(row)
        if self.events.publish(name, params) is not None:
            self._unsent.append(row["cdr_id"])

    async def _mark_delivered(self) -> None:
        """Outbox: rows whose events the bus delivered are marked `event_sent`."""
        while True:
            await asyncio.sleep(0.2)
            if not self._unsent or self.events is None:
                continue
            ids, self._unsent = self._unsent, []
            try:
                if await self.events.flush(5.0):
                    await self.cdrs.mark_sent(ids)
                    continue
            except Exception as exc:
                self.log.warning("cdr_outbox_failed", error=repr(exc))
            self._unsent = ids + self._unsent

    # -- calls out ----------------------------------------------------------------------------
    async def _send(self, d: Dialog, requests: Sequence[Any]) -> None:
        results = await self.uac.send_all(d.edge_uac, requests)
        for req, (status, reason) in zip(requests, results, strict=True):
            if status >= 300 and not (req.method == "BYE" and status in (481, 408)):
                self.uac_failures += 1
            self.log.info("dialog_request_sent", callid=d.callid, method=req.method,
                          side=req.side, status=status, reason=reason)

    # -- operations ---------------------------------------------------------------------------
    def end(self, d: Dialog, reason: str, headers: tuple[str, ...]) -> None:
        self.run(self.table.end(d, reason, self.now_ms(), headers))

    def request_sync(self) -> None:
        if self.cluster is not None:
            self.cluster.request_sync(CAPABILITY)

    # -- cluster capability --------------------------------------------------------------------
    def produce(self) -> Iterator[bytes]:
        for d in list(self.table.dialogs.values()):
            yield _RECORD + (d.packed or encode(d))

    def apply_sync(self, records: list[bytes]) -> None:
        for rec in records:
            self.apply_update(0, rec)

    def apply_update(self, src: int, payload: bytes) -> None:
        try:
            kind, body = payload[:1], payload[1:]
            now = self.now_ms()
            if kind == _RECORD:
                self.run(self.table.apply_replica(decode(body), now))
            elif kind == _PURGE:
                callid, _, tag = body.decode().partition("\x00")
                self.run(self.table.apply_purge((callid, tag), now))
        except Exception as exc:  # a bad packet must not stop replication
            self.log.warning("replica_rejected", src=src, error=repr(exc))

    def on_sync_done(self) -> None:
        self._refresh_view()
        self.run(self.table.recheck(self.now_ms()))

    # -- lifecycle ------------------------------------------------------------------------------
    async def load(self) -> int:
        """The dialogs stored before a restart, and the CDR events never delivered."""
        loaded = 0
        if self.store is not None:
            now = self.now_ms()
            for data in await self.store.load():
                try:
                    self.run(self.table.apply_replica(decode(data), now))
                    loaded += 1
                except Exception as exc:
                    self.log.warning("stored_dialog_unreadable", error=repr(exc))
            self._upserts.clear()  # what was just read is stored already
        for row in await self.cdrs.unsent(self.node_id):
            self._publish_row(row)
        return loaded

    async def _timer(self) -> None:
        interval = self.config.timer_interval
        while True:
            await asyncio.sleep(interval)
            try:
                now = self.now_ms()
                if self._refresh_view():
                    self.run(self.table.recheck(now))
                deadline = self.table.next_deadline()
                if deadline is not None and deadline <= now:
                    self.run(self.table.on_timer(now))
            except Exception:
                self.log.exception("dialog_timer_failed")

    async def _flusher(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self.commit()
            except Exception:
                await asyncio.sleep(0.5)  # the store is away: retried, changes kept
                self._dirty.set()

    def start(self) -> None:
        self._refresh_view()
        loop = asyncio.get_running_loop()
        self._loops = [loop.create_task(self._timer()), loop.create_task(self._flusher()),
                       loop.create_task(self._mark_delivered()),
                       loop.create_task(self._write_cdrs())]

    async def stop(self) -> None:
        for task in self._loops:
            task.cancel()
        for task in self._loops:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=5.0)
        if self._cdr_queue:  # asked for before the stop: written now (else after a restart)
            with contextlib.suppress(Exception):
                queue, self._cdr_queue = self._cdr_queue, []
                await asyncio.wait_for(self._write_batch(queue), 5.0)
        with contextlib.suppress(Exception):
            await self.commit()
        if self._unsent and self.events is not None:
            with contextlib.suppress(Exception):
                if await self.events.flush(2.0):
                    await self.cdrs.mark_sent(self._unsent)
        await self.uac.close()

    def statistics(self) -> dict[str, int]:
        s = self.table.stats
        counts = self.table.counts()
        return {
            **counts, "processed_dialogs": s.processed, "expired_dialogs": s.expired,
            "failed_dialogs": s.failed, "create_sent": s.create_sent,
            "update_sent": s.update_sent, "delete_sent": s.delete_sent,
            "create_recv": s.create_recv, "update_recv": s.update_recv,
            "delete_recv": s.delete_recv, "cdrs_written": s.cdrs,
            "cdr_failures": self.cdr_failures, "store_failures": self.store_failures,
            "uac_failures": self.uac_failures, "unknown_events": s.unknown_events,
        }


class DialogServicer(pb_grpc.DialogServicer):
    """The gRPC face of the service; bad input gets an answer, never a traceback."""

    def __init__(self, svc: DialogService) -> None:
        self.svc = svc
        self.table = svc.table
        self.last_seq: dict[str, int] = {}  # per edge stream: events already applied

    async def Track(self, request_iterator: AsyncIterator[Any],
                    context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        svc = self.svc
        if not svc.ready:
            # Still pulling the table from a donor: events about dialogs not received yet
            # would be dropped as unknown. The edge moves to a synced node.
            await context.abort(grpc.StatusCode.UNAVAILABLE, "dialog table not synced yet")
        replies: asyncio.Queue[Any] = asyncio.Queue()

        async def read() -> None:
            stream = ""
            last = 0
            try:
                async for batch in request_iterator:
                    if batch.stream_id:
                        stream = batch.stream_id
                        last = self.last_seq.get(stream, 0)
                    for ev in batch.events:
                        if ev.seq <= last:
                            continue  # resent after a broken stream: applied already
                        try:
                            svc.run(self._apply(ev))
                        except Exception:
                            svc.log.exception("dialog_event_failed", seq=ev.seq)
                        last = ev.seq
                    answers = [self._answer(q) for q in batch.queries]
                    try:
                        await svc.commit()
                    except Exception:
                        # Not stored: no acknowledgment, the edge keeps the events; the
                        # flusher retries the write.
                        if answers:
                            replies.put_nowait(pb.TrackReplies(replies=answers))
                        continue
                    if stream:
                        self.last_seq[stream] = last
                    replies.put_nowait(pb.TrackReplies(acked=last, replies=answers))
            finally:
                replies.put_nowait(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await replies.get()) is not None:
                yield item
        finally:
            reader.cancel()

    def _apply(self, ev: Any) -> list[Output]:
        kind = ev.WhichOneof("kind")
        table = self.table
        if kind == "create":
            return table.create(ev.create, ev.time_ms)
        if kind == "reply":
            return table.reply(ev.reply, ev.time_ms)
        if kind == "request":
            return table.in_dialog(ev.request, ev.time_ms)
        return []

    def _answer(self, q: Any) -> Any:
        try:
            kind = q.WhichOneof("kind")
            if kind == "size":
                p = q.size
                return pb.QueryReply(id=q.id, size=self.table.profile_size(
                    p.name, p.value if p.has_value else None))
            if kind == "reserve":
                r = q.reserve
                link = (r.profile.name, r.profile.value if r.profile.has_value else None)
                ok, size, outs = self.table.reserve(r.callid, r.from_tag, link, r.limit,
                                                    self.svc.now_ms())
                self.svc.run(outs)
                return pb.QueryReply(id=q.id, size=size, ok=ok)
            return pb.QueryReply(id=q.id, error="no query")
        except Exception as exc:
            self.svc.log.exception("dialog_query_failed")
            return pb.QueryReply(id=q.id, error=type(exc).__name__)

    # -- unary ------------------------------------------------------------------------------
    def _find(self, ref: Any) -> Dialog | None:
        d = self.table.find(ref.callid, ref.from_tag or None)
        return None if d is None or d.reserved else d

    async def SetExtra(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        d = self._find(request.dialog)
        if d is None:
            return pb.SetExtraReply(found=False)
        self.svc.run(self.table.set_extra(d, dict(request.extra), self.svc.now_ms()))
        await self.svc.commit()
        return pb.SetExtraReply(found=not d.cdr_done)

    async def EndDialog(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        d = self._find(request.dialog)
        if d is None or d.state == 5:
            return pb.EndDialogReply(found=False)
        state = int(d.state)
        self.svc.end(d, request.reason or "api", tuple(request.extra_headers))
        return pb.EndDialogReply(found=True, state=state)

    async def GetDialog(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        from services.dialog.mi import dialog_entry

        d = self._find(request)
        if d is None:
            return pb.DialogInfo(found=False)
        return pb.DialogInfo(found=True, json=json.dumps(
            dialog_entry(d, context=True, owner=self.svc.owner_of(d))))

    async def ProfileSize(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        return pb.ProfileSizeReply(size=self.table.profile_size(
            request.name, request.value if request.has_value else None))


# =============================================================================================
# process entry points

def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    from shared.service.boot import arguments

    p = arguments("dialog", "SipMesh dialog service (dialogs, profiles, CDRs)")
    p.add_argument("--db-url", help="dialog table: SQLite file, postgresql:// DSN or none")
    p.add_argument("--cdr-url", help="CDR table: SQLite file or postgresql:// DSN")
    return p.parse_args(argv)


def load_config(args: argparse.Namespace) -> DialogConfig:
    from shared.cluster.config import host_cluster_config
    from shared.service.boot import load_settings

    config = load_settings(DialogConfig, "dialog", args,
                           ("grpc_port", "http_port", "db_url", "cdr_url"))
    if config.cluster:  # checked with the rest: a pod name without an ordinal is one line
        host_cluster_config("dialog")
    return config


async def serve(config: DialogConfig) -> None:
    from services.dialog.mi import register_mi
    from services.dialog.store import open_cdr_store, open_dialog_store
    from shared.service.boot import GrpcApi, cluster_node, serve_announced, service_runtime

    runtime = service_runtime("dialog", config)
    # E_DLG_STATE_CHANGED, E_ACC_CDR, E_ACC_MISSED_EVENT: advertised by the gateway's events_list
    runtime.declare_events("dialog.#", "acc.#")
    cluster = None
    node_id = 0
    if config.cluster:
        cluster = cluster_node(runtime, "dialog")
        node_id = cluster.id
    store = None if config.db_url == "none" else open_dialog_store(
        config.dialog_location(node_id), table=config.dialog_table)
    cdrs = open_cdr_store(config.cdr_location, table=config.cdr_table)
    svc = DialogService(config, node_id=node_id, store=store, cdrs=cdrs,
                        events=runtime.events, cluster=cluster,
                        uac=UacClient(runtime.registry, config.edge_service, config.uac_timeout),
                        metrics=runtime.metrics)
    if cluster is not None:
        cluster.register_capability(
            CAPABILITY, produce=svc.produce, apply_sync=svc.apply_sync,
            apply_update=svc.apply_update, needs_sync=True, on_sync_done=svc.on_sync_done)
    register_mi(runtime, svc)
    runtime.stats.group("dialog", svc.statistics)
    api = GrpcApi(runtime, config, SERVICE,
                  lambda s: pb_grpc.add_DialogServicer_to_server(  # type: ignore[no-untyped-call]
                      DialogServicer(svc), s))
    if cluster is not None:  # and, clustered, holding the cluster's dialogs
        runtime.ready_check("cluster_sync", lambda: cluster.synced(CAPABILITY))

    @runtime.on_start
    async def _start() -> None:
        if store is not None:
            await store.open()
        await cdrs.open()
        loaded = await svc.load()
        runtime.log.info("dialogs_loaded", dialogs=loaded)
        await api.start()
        if cluster is not None:
            await cluster.start()
            runtime.meta.update(cluster.meta())
        svc.start()

    @runtime.on_stop
    async def _stop() -> None:
        await api.stop()
        await svc.stop()
        if cluster is not None:
            await cluster.stop()
        if store is not None:
            await store.close()
        await cdrs.close()

    def line() -> str:
        extra = f" cluster {cluster.url} node {cluster.id}" if cluster is not None else ""
        return (f"dialog ready grpc {runtime.meta['grpc']} http {runtime.base_url} "
                f"pid {os.getpid()}{extra}")

    await serve_announced(runtime, line, ready=lambda: api.serving)


def main(argv: Sequence[str] | None = None) -> int:
    from shared.service.boot import service_main

    return service_main("dialog", lambda: load_config(_parse_args(argv)), serve)
