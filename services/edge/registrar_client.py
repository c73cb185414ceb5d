"""The edge's client of the registrar service (gRPC `sipmesh.registrar.v1.Registrar`).

Where the registrars are: a fixed `host:port` list (`[edge] registrar`), or else every
passing instance of service `registrar` in discovery, read from the `grpc` entry of its
metadata and kept current by a watch task.  Calls go round-robin, and a call that one
registrar did not answer (unavailable, deadline, its stream broken: it is draining or
died) moves to the next one.  Lookup and GetCredentials are idempotent.  A Save may
have taken effect on the registrar that went away (and have been replicated from
there), so it is sent again marked `retry`: the next registrar then takes a binding with
the REGISTER's own Call-ID and CSeq as that effect and answers 200 (location.py), where
a plain Save would be refused as a replay (400).  A Save answered 503 (a registrar not
synced yet, or unable to replicate) moves on the same way (RFC 3263 §4.3: try the next
server after a 503); so while one registrar is up no REGISTER gets 503 for another one
going away (a rolling restart, issue 20).  Every call has a deadline.

Calls travel on one long-lived bidirectional stream per registrar (`Session`, see
`_Session`): a request is tagged with an id, queued for the stream's writer, and its
future resolved by the reader when the reply with that id comes back.  That spares each
REGISTER the setup of a unary RPC (HTTP/2 stream, metadata, call object), the bulk of the
edge<->registrar cost.  Calls made within `batch_window` (3 ms by default) of each other
share one stream message: measured against a real registrar at 3,000 Saves/s, the edge's
CPU per Save fell from ~93 us (no window) to ~65 us (1 ms) and ~56 us (3 ms) -- a gRPC
message costs about the same whatever it carries.  REGISTER's calls (Save, SaveWithDigest)
wait longer for company, `save_window` (50 ms by default); a call on a stream idle for a
window (no message out for that long) goes at once, so only a loaded edge waits.  A phone
does not notice 50 ms on a REGISTER (it retransmits after 500 ms), and at a few hundred
REGISTER/s a message then carries ~30 of them instead of ~1.5, which shares the gRPC
message on both sides, the registrar's task, its trip to SQLite's thread and its SQL
transaction (issue 22, docs/perf.md "Fifth round": 3 -> 20 ms, -35% of a REGISTER's CPU at
500/s; "Ninth round": 20 -> 50 ms, another ~-13%: the registrar's cost at that rate is
mostly per message, its wake-ups on cold caches).  A Lookup or
GetCredentials (a call being routed waits for it) cuts a longer wait short to its own
`batch_window`, and what waits goes with it.
A stream that breaks fails the calls in flight (they move to the next registrar) and is
opened again by the next call.  The stream to a registrar that leaves discovery (it is
draining) is ended gracefully: half-closed, so the registrar answers what it got and
ends it at once rather than at the end of its drain grace (and its channel is closed).
`streaming=False` keeps the unary calls.

REGISTER's digest is verified by the registrar on Save (`save_with_digest`, one round trip;
issue 22).  A registrar older than that call answers that it does not know it, having done
nothing: the client then says so (`DigestOnSaveUnsupported`) and the edge checks the
digest itself with GetCredentials, as before, until the set of registrars changes.
Credentials (HA1 hashes, for 407 challenges and that fallback) are cached for
`credentials_ttl` seconds; a failed verification against a cached entry fetches it again
(a password changed with `sipmesh user passwd` is seen at once).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import grpc

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from shared.rpc.discovered import DiscoveredGrpcClient


@dataclass(frozen=True, slots=True)
class Credentials:
    ha1: str
    ha1_sha256: str

    def for_algorithm(self, algorithm: str) -> str | None:
        name = algorithm.upper().removesuffix("-SESS")
        if name == "MD5":
            return self.ha1
        if name == "SHA-256":
            return self.ha1_sha256
        return None


@dataclass(frozen=True, slots=True)
class LookupBranch:
    uri: str
    next_hop: str
    q: float
    federated: bool = False  # to another point of presence (federation-cachedb)
    path: tuple[str, ...] = ()  # RFC 3327 Path values, in order: the branch's Route set


class RegistrarUnavailable(Exception):
    """No registrar could be reached."""


_KINDS = {"Save": "save", "Lookup": "lookup", "GetCredentials": "credentials",
          "SaveWithDigest": "save_with_digest"}
# What a registrar older than SaveWithDigest answers on the Session to a call it does not
# know (services/registrar/app.py since 0.1.0): it did nothing.
_UNKNOWN_CALL = "no call in the request"


class DigestOnSaveUnsupported(Exception):
    """The registrar asked is older than SaveWithDigest and did nothing: check the digest
    at the edge (GetCredentials) and Save, as before."""


class _CallFailed(Exception):
    """This registrar did not answer the call (unavailable, deadline, stream broken)."""

    def __init__(self, why: str, *, elsewhere: bool = True) -> None:
        super().__init__(why)
        self.elsewhere = elsewhere  # another registrar may answer (not a bad request)


class _Unknown(_CallFailed):
    """This registrar does not know the call (older than it) and did nothing."""


_ELSEWHERE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                        grpc.StatusCode.CANCELLED})


BATCH_FULL = 64  # calls waiting: send at once, without the batch window
_PATIENT = frozenset({"save", "save_with_digest"})  # REGISTER's calls: `save_window`
SaveResult = tuple[int, str, list[tuple[str, str]], bool]  # status, reason, headers, rejected


class _Save:
    """A Save or SaveWithDigest as a REGISTER queues it: its fields only.  The Session's
    writer puts them into the stream message itself, every call of a batch in one go
    (`fill`), and the reader turns each SaveReply into a `SaveResult` in its loop over
    the batch: per REGISTER nothing but this object.  Measured on the real edge worker at
    500 REGISTER/s (issue 22, docs/perf.md "Seventh round"): the same protobuf code run
    once per REGISTER, after the loop slept, cost ~40-50 us of CPU per REGISTER (cold
    caches), and ~5 us per call when run for a batch in a row."""

    __slots__ = ("creds", "host", "message", "port", "retry", "socket", "transport")

    def __init__(self, message: bytes, host: str, port: int, transport: str, socket: str,
                 creds: Any = None, retry: bool = False) -> None:
        self.message = message
        self.host = host
        self.port = port
        self.transport = transport
        self.socket = socket
        self.creds = creds  # shared.sip.DigestCredentials: SaveWithDigest
        self.retry = retry

    def fill(self, out: Any) -> None:
        """Sets the fields of `out` (a SaveRequest inside the stream message) in place."""
        out.message = self.message
        out.source_host = self.host
        out.source_port = self.port
        out.transport = self.transport
        out.socket = self.socket
        if self.retry:
            out.retry = True
        creds = self.creds
        if creds is not None:
            digest = out.digest
            digest.username = creds.username
            digest.realm = creds.realm
            digest.nonce = creds.nonce
            digest.uri = creds.uri
            digest.response = creds.response
            digest.algorithm = creds.algorithm
            digest.qop = creds.qop or ""
            digest.nc = creds.nc or ""
            digest.cnonce = creds.cnonce or ""

    def request(self) -> Any:
        """The SaveRequest of the unary calls (`streaming=False`)."""
        out = pb.SaveRequest()
        self.fill(out)
        return out


def _save_result(reply: Any) -> SaveResult:
    return (reply.status, reply.reason, [(h.name, h.value) for h in reply.headers],
            reply.digest_rejected)


def _wake(waiting: asyncio.Future[None]) -> None:
    if not waiting.done():
        waiting.set_result(None)


class _Session:
    """One `Session` stream to one registrar: id-tagged requests, replies by id."""

    def __init__(self, stub: Any, log: Any, window: float, save_window: float) -> None:
        self.log = log
        self.window = window  # Lookup, GetCredentials: a call being routed waits
        self.save_window = save_window  # Save, SaveWithDigest: REGISTER's calls
        self.futures: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.queue: asyncio.Queue[Any] = asyncio.Queue()
        self.broken = False
        # The writer's wait for company: its future, the timer that ends it, and when.
        self._waiting: asyncio.Future[None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._until = 0.0
        self._hurry = False  # a call that cannot wait long is queued
        self._last = -math.inf  # when the last message went out
        self.call = stub.Session(self._requests())
        self.reader = asyncio.get_running_loop().create_task(self._read())

    async def _requests(self) -> Any:
        # Everything queued while the previous message was being written goes out in the
        # next one: the per-message cost of gRPC is shared by all calls waiting.
        queue = self.queue
        loop = asyncio.get_running_loop()
        while (req := await queue.get()) is not None:
            window = self.save_window if not self._hurry and req[1] in _PATIENT \
                else self.window
            if window and queue.qsize() < BATCH_FULL and loop.time() - self._last < window:
                # Wait a moment for company: a gRPC message costs the edge ~100 us of CPU
                # whatever it carries, so at a few thousand calls/s one message per call
                # would cost more than the SIP work (see `batch_window`); `request` ends
                # the wait early for a full batch or a call that cannot wait as long.
                # Only under load (a message went out less than a window ago): a call on
                # an idle stream goes at once, so a quiet edge adds no latency at all.
                waiting = self._waiting = loop.create_future()
                self._until = loop.time() + window
                self._timer = loop.call_later(window, _wake, waiting)
                try:
                    await waiting
                finally:
                    if self._timer is not None:
                        self._timer.cancel()
                    self._waiting = self._timer = None
            calls = [req]
            while not queue.empty():
                more = queue.get_nowait()
                if more is None:
                    yield _message(calls)
                    return
                calls.append(more)
            self._hurry = False  # everything queued goes now
            self._last = loop.time()
            yield _message(calls)

    async def _read(self) -> None:
        error: str = "stream closed"
        try:
            futures = self.futures
            async for batch in self.call:
                for reply in batch.replies:
                    fut = futures.pop(reply.id, None)
                    if fut is None or fut.done():
                        continue
                    if reply.error:
                        fut.set_exception(_Unknown(reply.error) if reply.error == _UNKNOWN_CALL
                                          else _CallFailed(f"registrar error: {reply.error}"))
                        continue
                    kind = reply.WhichOneof("result")
                    if kind is None:
                        fut.set_exception(_CallFailed("registrar error: no result"))
                    elif kind in _PATIENT:
                        # A Save's answer as the REGISTER uses it, made here for the whole
                        # batch (see `_Save`).
                        fut.set_result(_save_result(getattr(reply, kind)))
                    else:
                        fut.set_result(getattr(reply, kind))
        except grpc.aio.AioRpcError as exc:
            error = f"{exc.code().name}: {exc.details()}"
        except asyncio.CancelledError:
            error = "client closed"
            raise
        except Exception as exc:
            error = repr(exc)
        finally:
            self.broken = True
            for fut in self.futures.values():
                if not fut.done():
                    fut.set_exception(_CallFailed(error))
            self.futures.clear()

    async def request(self, kind: str, request: Any, timeout: float) -> Any:
        if self.broken:
            raise _CallFailed("stream broken")
        rid = next(self.ids)
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[Any] = loop.create_future()
        self.futures[rid] = fut
        queue = self.queue
        queue.put_nowait((rid, kind, request))
        if kind not in _PATIENT:
            self._hurry = True
        waiting = self._waiting
        if waiting is not None and not waiting.done():
            if queue.qsize() >= BATCH_FULL:
                waiting.set_result(None)
            elif kind not in _PATIENT and self._until - loop.time() > self.window:
                # A Lookup (a call being routed) does not wait REGISTER's window.
                if self._timer is not None:
                    self._timer.cancel()
                self._until = loop.time() + self.window
                self._timer = loop.call_later(self.window, _wake, waiting)
        # A plain timer that fails the future, not asyncio.timeout(): that context manager
        # costs several times more, on a path taken by every REGISTER.
        timer = loop.call_later(timeout, self._expire, rid)
        try:
            return await fut
        finally:
            timer.cancel()

    def _expire(self, rid: int) -> None:
        fut = self.futures.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(_CallFailed("deadline exceeded"))

    async def finish(self, within: float) -> None:
        """Ends the stream gracefully: no more requests (half-close), the replies of
        those sent still come; cancelled after `within` s. A draining registrar then
        sees its stream end as soon as it answered, instead of holding it open to the
        end of its grace and cancelling what is in flight there."""
        self.queue.put_nowait(None)
        try:
            await asyncio.wait({self.reader}, timeout=within)
        finally:
            await self.close()

    async def close(self) -> None:
        self.queue.put_nowait(None)
        self.call.cancel()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await self.reader


class RegistrarClient(DiscoveredGrpcClient):
    LOGGER = "edge.registrar"
    WATCH_FAILED = "registrar_watch_failed"

    def __init__(self, *, addresses: Sequence[str] = (), registry: Any = None,
                 service: str = "registrar", timeout: float = 1.0,
                 credentials_ttl: float = 2.0, clock: Callable[[], float] = time.monotonic,
                 register_auth: bool = True, algorithms: Sequence[str] = ("MD5",),
                 max_latency_us: int = 0, by_latency: bool = False,
                 streaming: bool = True, batch_window: float = 0.003,
                 save_window: float | None = 0.05,
                 expected: bool | None = None, digest_on_save: bool = True) -> None:
        # No deadline interceptor on the channels (grpc.aio interceptors cost ~40 us per
        # call on this hot path): every call below passes its own timeout instead.
        super().__init__(addresses=addresses, registry=registry, service=service,
                         stub=pb_grpc.RegistrarStub,
                         channel_options=[("grpc.keepalive_time_ms", 30_000)])
        # Whether a registrar belongs to this deployment (fixed addresses, or a shared
        # discovery registry): then none being reachable is an outage (503), not a mesh
        # without one (the default routing's 404 for unknown local users).
        self.expected = bool(self.static) or registry is not None if expected is None \
            else expected
        self.timeout = timeout
        self.credentials_ttl = credentials_ttl
        self.clock = clock
        self.register_auth = register_auth  # challenge REGISTER (default routing reads it)
        self.algorithms = tuple(algorithms)  # offered in 401/407, preferred first
        self.max_latency_us = max_latency_us
        self.by_latency = by_latency
        self._rr = itertools.count()
        self._cache: dict[tuple[str, str], tuple[Credentials | None, float]] = {}
        self.streaming = streaming
        self.batch_window = batch_window
        # REGISTER's calls wait longer for company (the module docstring); None: as long
        # as the others.
        self.save_window = batch_window if save_window is None else save_window
        self._sessions: dict[str, _Session] = {}
        self._retiring: set[asyncio.Task[None]] = set()
        # REGISTER's digest checked by the registrar on Save (SaveWithDigest), until a
        # registrar says it does not know that call; asked again when the set of
        # registrars changes (an older one replaced during an upgrade).
        self.digest_on_save = self._digest_on_save = digest_on_save

    def accepts(self, instance: Any) -> bool:
        # meta "ready" "0": registered but not ready (a restarted node still syncing); an
        # older registrar that does not say is taken as ready.
        return bool(instance.meta.get("ready") != "0")

    def _set(self, instances: Sequence[Any]) -> None:
        before = set(self.targets)
        super()._set(instances)
        if set(self.targets) != before:
            self.digest_on_save = self._digest_on_save
        for gone in before - set(self.targets):
            self._retire(gone)

    def _retire(self, target: str) -> None:
        """A registrar that left discovery (draining, or gone): its stream is ended once
        what was sent on it is answered, and its channel closed."""
        session = self._sessions.pop(target, None)
        channel = self.stubs.pop(target)
        if session is None and channel is None:
            return

        async def retire() -> None:
            try:
                if session is not None:
                    await session.finish(self.timeout)
            finally:
                if channel is not None:
                    with contextlib.suppress(Exception):
                        await channel.close()

        task = asyncio.get_running_loop().create_task(retire())
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def close(self) -> None:
        for task in list(self._retiring):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for session in list(self._sessions.values()):
            await session.close()
        self._sessions.clear()
        await super().close()

    def _order(self) -> list[str]:
        targets = list(self.targets)
        if not targets:
            raise RegistrarUnavailable("no registrar known")
        start = next(self._rr) % len(targets)
        return targets[start:] + targets[:start]

    def _session(self, target: str) -> _Session:
        session = self._sessions.get(target)
        if session is None or session.broken:
            session = self._sessions[target] = _Session(self._stub(target), self.log,
                                                        self.batch_window, self.save_window)
        return session

    async def _one(self, target: str, name: str, request: Any) -> Any:
        """One call to one registrar; _CallFailed when it did not answer."""
        if self.streaming:
            return await self._session(target).request(_KINDS[name], request, self.timeout)
        try:
            if type(request) is _Save:
                return _save_result(await getattr(self._stub(target), name)(
                    request.request(), timeout=self.timeout))
            return await getattr(self._stub(target), name)(request, timeout=self.timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                raise _Unknown(f"{name}: UNIMPLEMENTED") from exc
            raise _CallFailed(f"{exc.code().name}: {exc.details()}",
                              elsewhere=exc.code() in _ELSEWHERE) from exc

    async def _call(self, name: str, request: Any,
                    again: Callable[[Any], Any] | None = None,
                    answered: Callable[[Any], bool] | None = None) -> Any:
        """`request` to one registrar after another until one answers (and `answered`
        accepts its reply); `again` makes the request sent after the first attempt.
        The registrars are those known at each failure, so one that became ready
        meanwhile is tried too; each at most once."""
        order = self._order()
        tried: list[str] = []
        last: Exception | None = None
        reply: Any = None
        while True:
            if not order:
                order = [t for t in self.targets if t not in tried]
                if not order:
                    break
            target = order.pop(0)
            if tried:
                if target not in self.targets:
                    continue  # left discovery meanwhile (retired: no new stream to it)
                if again is not None and len(tried) == 1:
                    request = again(request)
            tried.append(target)
            try:
                reply = await self._one(target, name, request)
            except _Unknown:
                raise
            except _CallFailed as exc:
                last = exc
                if not exc.elsewhere:
                    break
            else:
                if answered is None or answered(reply):
                    return reply
        if reply is not None:
            return reply  # answered, though not as `answered` wanted: the last such answer
        raise RegistrarUnavailable(str(last))

    # -- the three calls -----------------------------------------------------------------
    async def save(self, message: bytes, host: str, port: int, transport: str,
                   socket: str) -> tuple[int, str, list[tuple[str, str]]]:
        status, reason, headers, _ = await self._call(
            "Save", _Save(message, host, port, transport, socket), again=_retried,
            answered=_not_503)
        return status, reason, headers

    async def save_with_digest(
            self, message: bytes, host: str, port: int, transport: str, socket: str,
            creds: Any) -> SaveResult:
        """Save once the registrar verified `creds` (shared.sip.DigestCredentials) against
        the subscriber's HA1: (status, reason, headers, digest rejected).
        DigestOnSaveUnsupported when the registrar is older than that call (it did
        nothing; later REGISTERs go the old way until the registrars change)."""
        try:
            result: SaveResult = await self._call(
                "SaveWithDigest", _Save(message, host, port, transport, socket, creds),
                again=_retried, answered=_not_503)
        except _Unknown as exc:
            self.digest_on_save = False
            self.log.info("registrar_without_digest_on_save", why=str(exc))
            raise DigestOnSaveUnsupported(str(exc)) from None
        return result

    async def lookup(self, aor: str, method: str, *, federated: bool = False
                     ) -> tuple[int, list[LookupBranch]]:
        """Bindings of `aor` for `method`; the latency options are the client's
        (`max_latency_us`, `by_latency`: OpenSIPS lookup flags yNNN and Y); `federated`
        (flag g) adds branches to the other points of presence holding the AOR."""
        reply = await self._call("Lookup", pb.LookupRequest(
            aor=aor, method=method, max_latency_us=self.max_latency_us,
            by_latency=self.by_latency, federated=federated))
        return reply.status, [LookupBranch(b.uri, b.next_hop, b.q, b.federated, tuple(b.path))
                              for b in reply.branches]

    async def credentials(self, username: str, domain: str, *,
                          fresh: bool = False) -> Credentials | None:
        key = (username, domain.lower())
        now = self.clock()
        cached = self._cache.get(key)
        if cached is not None and not fresh and cached[1] > now:
            return cached[0]
        reply = await self._call("GetCredentials", pb.CredentialsRequest(
            username=username, domain=domain.lower()))
        creds = Credentials(reply.ha1, reply.ha1_sha256) if reply.found else None
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[key] = (creds, now + self.credentials_ttl)
        return creds


def _message(calls: list[tuple[int, str, Any]]) -> Any:
    """The stream message of queued calls `(id, kind, request)`, built in place: a `_Save`
    fills its SaveRequest, any other request is copied in."""
    batch = pb.SessionRequests()
    add = batch.calls.add
    for rid, kind, request in calls:
        call = add(id=rid)
        if type(request) is _Save:
            request.fill(getattr(call, kind))
        else:
            getattr(call, kind).CopyFrom(request)
    return batch


def _retried(request: _Save) -> _Save:
    """The Save sent to the next registrar: marked `retry` (see the module docstring)."""
    return _Save(request.message, request.host, request.port, request.transport,
                 request.socket, request.creds, retry=True)


def _not_503(reply: SaveResult) -> bool:
    return reply[0] != 503
