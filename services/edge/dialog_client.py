"""The edge's client of the dialog service: one `Track` stream (dialog.proto) per worker.

The SIP path never waits on it. `emit()` numbers an event, appends it to a bounded buffer
and returns; a sender task writes what is buffered onto the stream (events within
`batch_window`, 5 ms, of each other share one message: a gRPC message costs the edge
about the same whatever it carries) and the dialog service acknowledges
them once applied and stored (`acked`: every seq up to it). Acknowledged events leave the
buffer; a stream that breaks is opened again (to the next dialog node when there are
several) and every unacknowledged event is sent again, with those acknowledged in the
last `resend_window` seconds (2 s): a dialog node acknowledges after storing an event
locally, and one killed before its replication reached the other nodes would otherwise
take those changes with it. The service applies a repeated event as a no-op; a node still
pulling the dialog table from a donor refuses the stream (it could not apply events
about dialogs it has not received yet), so the edge moves on to a synced one.
While no dialog service can be reached the edge keeps routing calls;
events wait in the buffer, and beyond `buffer_size` new events are dropped and counted
(`dialog:events_dropped`), never blocking SIP.

Profile queries from routing (`ctx.dialog.profile_size`, `set_profile_limited`) ride the
same stream with an id and a deadline; without a dialog service they raise
`DialogUnavailable`.

Where the dialog nodes are: fixed `host:port` addresses (`[edge] dialog`), or else every
passing instance of service `dialog` in discovery (`grpc` in its metadata). The client
sticks to one node while its stream works, so a dialog's events arrive in order.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import os
import socket
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import grpc

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb
from contracts.generated.sipmesh.dialog.v1 import dialog_pb2_grpc as pb_grpc
from shared.rpc.discovered import DiscoveredGrpcClient

BATCH_MAX = 1024  # events per stream message


class DialogUnavailable(Exception):
    """No dialog service answered the query."""


class DialogClient(DiscoveredGrpcClient):
    LOGGER = "edge.dialog"
    WATCH_FAILED = "dialog_watch_failed"

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "dialog", buffer_size: int = 10000,
                 query_timeout: float = 0.5, batch_window: float = 0.005,
                 resend_window: float = 2.0) -> None:
        super().__init__(addresses=addresses, registry=registry, service=service,
                         stub=pb_grpc.DialogStub,
                         channel_options=[("grpc.keepalive_time_ms", 10_000),
                                          ("grpc.keepalive_timeout_ms", 5_000)])
        self.buffer_size = buffer_size
        self.query_timeout = query_timeout
        self.batch_window = batch_window
        self.stream_id = f"{socket.gethostname()}-{os.getpid()}-{int(time.time() * 1000)}"
        # Unacknowledged events: written on the current stream (in order), and not yet
        # written. Two deques keep every step O(1) whatever the backlog (a dialog service
        # falling behind must not make each new stream message cost more).
        self.inflight: collections.deque[Any] = collections.deque()
        self.pending: collections.deque[Any] = collections.deque()
        # Acknowledged in the last `resend_window` seconds: sent again on a new stream (see
        # the module docstring), as the node that acknowledged them may have died before
        # replicating them.
        self.resend_window = resend_window
        self.recent: collections.deque[tuple[float, Any]] = collections.deque()
        self.queries: collections.deque[Any] = collections.deque()  # not yet written
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self._seq = itertools.count(1)
        self._qids = itertools.count(1)
        self._stream_no = 0  # which stream is current: a broken one's writer stops
        self._wake = asyncio.Event()
        self._query_wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connected = False
        self.available = bool(self.static)
        # statistics (dialog: group)
        self.emitted = 0
        self.dropped = 0
        self.acked = 0
        self.reconnects = 0
        self.messages = 0

    # -- the hot path ---------------------------------------------------------------------
    # A dialog service is known (configured, or seen in discovery since start): dialogs are
    # tracked. Once seen, a dialog service that goes away (a restart, every node down) does
    # not stop the tracking: its events wait in the buffer.  A plain attribute (the base
    # class's is a property that may start the discovery watch; `start` does that here):
    # the proxy core reads it for every forwarded request (`ProxyCore._tracking`).
    available: bool = False

    def emit(self, event: Any) -> None:
        """Queues a DialogEvent (seq is set here); never blocks, never raises."""
        if len(self.pending) + len(self.inflight) >= self.buffer_size:
            self.dropped += 1
            return
        event.seq = next(self._seq)
        self.pending.append(event)
        self.emitted += 1
        self._wake.set()

    async def query(self, query: Any) -> Any:
        """Sends a Query (id set here) and waits for its QueryReply."""
        if not self.connected and not self.targets:
            raise DialogUnavailable("no dialog service known")
        qid = next(self._qids)
        query.id = qid
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.futures[qid] = fut
        self.queries.append(query)
        self._wake.set()
        self._query_wake.set()
        try:
            reply = await asyncio.wait_for(fut, self.query_timeout)
        except TimeoutError:
            raise DialogUnavailable("dialog service did not answer in time") from None
        finally:
            self.futures.pop(qid, None)
        if reply.error:
            raise DialogUnavailable(reply.error)
        return reply

    # -- lifecycle ------------------------------------------------------------------------
    async def set_extra(self, call_id: str, from_tag: str, extra: dict[str, str]) -> bool:
        """Adds CDR extra fields to a dialog (gRPC SetExtra, e.g. a call's MOS from its
        BYE's delete); True when a dialog node took them before the CDR was written.
        Never raises; bounded by the query timeout per node tried."""
        ref = pb.DialogRef(callid=call_id, from_tag=from_tag)
        for target in list(self.targets):
            try:
                reply = await self._stub(target).SetExtra(
                    pb.SetExtraRequest(dialog=ref, extra=extra), timeout=self.query_timeout)
            except grpc.aio.AioRpcError as exc:
                self.log.warning("set_extra_failed", call_id=call_id, target=target,
                                 error=exc.code().name)
                continue
            return bool(reply.found)
        return False

    async def start(self) -> None:
        await super().start()
        self._task = asyncio.create_task(self._run())

    def _set(self, instances: Sequence[Any]) -> None:
        super()._set(instances)
        self.available = self.available or bool(self.targets)
        if self.targets:
            self._wake.set()

    async def close(self, grace: float = 2.0) -> None:
        """Stops the stream, first handing over what is still held: the events of calls
        this edge saw (their CDRs depend on them) are written and acknowledged, for at
        most `grace` s (a stopping edge must not take a call's BYE or 200 with it; a
        dialog service that is away keeps them no longer than that)."""
        deadline = time.monotonic() + grace
        while ((self.pending or self.inflight) and self.targets and self._task is not None
               and time.monotonic() < deadline):
            await asyncio.sleep(0.01)  # polling a drain with a bound, not a test's sleep
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await super().close()  # the discovery watch, the channels

    # -- the stream -----------------------------------------------------------------------
    async def _run(self) -> None:
        backoff = 0.1
        index = 0
        while True:
            if not self.targets:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), 1.0)
                continue
            target = self.targets[index % len(self.targets)]
            started = time.monotonic()
            try:
                await self._stream(target)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.log.warning("dialog_stream_broken", target=target, error=repr(exc),
                                 buffered=self.buffered)
            finally:
                self.connected = False
                self._fail_queries("stream broken")
            self.reconnects += 1
            index += 1  # the next node (when there are several)
            backoff = 0.1 if time.monotonic() - started > 5 else min(backoff * 2, 2.0)
            await asyncio.sleep(backoff)

    async def _stream(self, target: str) -> None:
        stub = self._stub(target)
        # Every unacknowledged event goes again on a new stream; the writer of the broken
        # one (grpc may still hold it a moment) must not take events from the new one.
        self._stream_no += 1
        number = self._stream_no
        call = stub.Track(self._requests(number))
        try:
            async for reply in call:
                self.connected = True
                if reply.acked:
                    self._ack(reply.acked)
                for answer in reply.replies:
                    fut = self.futures.get(answer.id)
                    if fut is not None and not fut.done():
                        fut.set_result(answer)
        finally:
            if self._stream_no == number:
                self._stream_no += 1  # this stream's writer stops at its next turn
            # What this stream carried without an acknowledgment goes first on the next.
            self.pending.extendleft(reversed(self.inflight))
            self.inflight.clear()
            self._wake.set()

    @property
    def buffered(self) -> int:
        """Events not acknowledged yet."""
        return len(self.pending) + len(self.inflight)

    def _ack(self, acked: int) -> None:
        inflight = self.inflight
        recent = self.recent
        now = time.monotonic()
        while inflight and inflight[0].seq <= acked:
            recent.append((now, inflight.popleft()))
            self.acked += 1
        horizon = now - self.resend_window
        while recent and (recent[0][0] < horizon or len(recent) > self.buffer_size):
            recent.popleft()

    async def _requests(self, number: int) -> AsyncIterator[Any]:
        first = True
        horizon = time.monotonic() - self.resend_window
        again = [event for at, event in self.recent if at >= horizon]
        while again and self._stream_no == number:
            batch, again = again[:BATCH_MAX], again[BATCH_MAX:]
            yield pb.TrackRequests(stream_id=self.stream_id if first else "", events=batch)
            first = False
        pending = self.pending
        inflight = self.inflight
        if first:  # the stream's first message says who is sending, at once
            yield pb.TrackRequests(stream_id=self.stream_id)
        while self._stream_no == number:
            if not pending and not self.queries:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self.batch_window and len(pending) < BATCH_MAX and not self.queries:
                # A moment for company, before every message (not only after an idle
                # spell: at a steady rate there is always something pending when a write
                # ends, and sending it at once made one small message per write - gRPC's
                # write then cost the edge ~10% of its CPU). One stream message costs
                # about the same whatever it carries. A routing query arriving meanwhile
                # ends the wait: routing is waiting for its answer.
                self._query_wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._query_wake.wait(), self.batch_window)
                if self._stream_no != number:
                    return
            events: list[Any] = []
            while pending and len(events) < BATCH_MAX:
                event = pending.popleft()
                inflight.append(event)
                events.append(event)
            queries: list[Any] = []
            while self.queries and len(queries) < BATCH_MAX:
                queries.append(self.queries.popleft())
            if events or queries:
                self.messages += 1
                yield pb.TrackRequests(events=events, queries=queries)

    def _fail_queries(self, why: str) -> None:
        for fut in list(self.futures.values()):
            if not fut.done():
                fut.set_exception(DialogUnavailable(why))
        self.queries.clear()

    def statistics(self) -> dict[str, int]:
        return {"events_emitted": self.emitted, "events_acked": self.acked,
                "events_buffered": self.buffered, "events_dropped": self.dropped,
                "stream_reconnects": self.reconnects, "stream_messages": self.messages}
