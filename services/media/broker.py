"""The broker: rtpengine sets, the instance of each call, and the ng exchange (asyncio).

Protocol decisions live in the sans-IO modules (ng.py: cookies and retransmission;
flags.py: the ng dictionary; sets.py: the choice and the disable/recheck state;
stats.py: MOS); this module owns the sockets (one connected UDP socket per instance, so an
ICMP "port unreachable" is pinned to its instance and fails its requests at once), the one
timer at the ng core's next deadline, and the order of steps:

* **offer** of a new call (no To tag): the set's choice for the Call-ID among the enabled
  instances; an instance that does not answer is disabled (E_RTPENGINE_STATUS) and the next
  choice is tried, as OpenSIPS does.  When the instance used is not the call's *home* (the
  choice with every instance up), the exception is recorded (store.py) so that every
  broker finds the call.
* **answer, delete, query, re-offer**: the instance the edge names (it learnt it from the
  offer's reply, same transaction), else the recorded exception, else the home.  A delete
  rtpengine answers with "Call-ID not found" from that instance is tried on the other
  enabled instances of the set (a set changed by a reload since the offer), so a session is
  never left behind.  A delete for an instance that is disabled fails at once rather than
  waiting out the timeouts.
* **recheck**: every `recheck_tick` the disabled instances whose time has come are pinged;
  a pong enables them (E_RTPENGINE_STATUS).  With `ping_interval` the enabled ones are
  pinged too, so a dead instance is noticed without traffic.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import structlog

from services.media.flags import FlagError, SipFacts, build_command
from services.media.ng import Expired, NgProtocol, Retransmit, Target
from services.media.sets import Engine, EngineSets, StatusChange, parse_set_definition
from services.media.stats import CallStats, call_stats
from services.media.store import MediaStore

NOT_FOUND_WARNING = "Call-ID not found"
MEMORY_CALLS = 100_000  # exceptions remembered in process (the store has them all)


class EngineUnavailable(Exception):
    """The instance did not answer (every transmission timed out, or it is unreachable)."""


@dataclass
class Outcome:
    """The result of one command: rtpengine's reply, or why there is none."""

    ok: bool
    engine: Engine | None = None
    reply: dict[str, Any] | None = None
    error: str = ""

    @property
    def instance(self) -> str:
        return self.engine.url if self.engine is not None else ""

    @property
    def warning(self) -> str:
        value = (self.reply or {}).get("warning", "")
        return value if isinstance(value, str) else ""

    @property
    def sdp(self) -> str:
        value = (self.reply or {}).get("sdp", "")
        return value if isinstance(value, str) else ""

    def stats(self) -> CallStats | None:
        return call_stats(self.reply) if self.ok and self.reply is not None else None

    def json(self) -> str:
        return json.dumps(self.reply, default=lambda b: b.decode("latin-1")) if self.reply else ""


class _EngineSocket(asyncio.DatagramProtocol):
    def __init__(self, broker: Broker, target: Target) -> None:
        self.broker = broker
        self.target = target
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.broker._on_datagram(data)

    def error_received(self, exc: Exception) -> None:
        # ICMP port unreachable on a connected socket: nothing listens there now.
        if isinstance(exc, ConnectionRefusedError):
            self.broker._unreachable(self.target)


class Broker:
    """See the module docstring."""

    def __init__(self, *, store: MediaStore | None = None, static_sets: Iterable[str] = (),
                 timeout: float = 1.0, tries: int = 5, disable_timeout: float = 60.0,
                 ping_interval: float = 0.0, recheck_tick: float = 1.0,
                 record_max_age: float = 86400.0,
                 on_status: Callable[[StatusChange], object] | None = None,
                 clock: Callable[[], float] | None = None,
                 observe: Callable[[str, float, bool], object] | None = None) -> None:
        self.store = store
        self.static_sets = [parse_set_definition(t) for t in static_sets]
        self.sets = EngineSets(disable_timeout=disable_timeout)
        self.ng = NgProtocol(f"{os.getpid()}_{os.urandom(3).hex()}", timeout=timeout,
                             tries=tries)
        self.ping_interval = ping_interval
        self.recheck_tick = recheck_tick
        self.record_max_age = record_max_age
        self.on_status = on_status
        self.observe = observe  # (command, seconds, ok): latency histogram
        self.log = structlog.get_logger("media.broker")
        self._clock = clock
        self._sockets: dict[Target, _EngineSocket] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._ticker: asyncio.Task[None] | None = None
        self._calls: OrderedDict[str, tuple[int, str]] = OrderedDict()
        self.counters = {"offers": 0, "answers": 0, "deletes": 0, "queries": 0,
                         "errors": 0, "failovers": 0, "records": 0, "probes": 0,
                         "subscriptions": 0}

    # -- lifecycle --------------------------------------------------------------------------
    def now(self) -> float:
        return self._clock() if self._clock else asyncio.get_running_loop().time()

    async def start(self) -> None:
        """Load the sets, open the sockets, ping every instance once (its initial state)."""
        if self.store is not None:
            await self.store.open()
        await self.reload()
        self._ticker = asyncio.get_running_loop().create_task(self._tick())

    async def close(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        for task in list(self._tasks):
            task.cancel()
        if self._timer is not None:
            self._timer.cancel()
        for sock in self._sockets.values():
            if sock.transport is not None:
                sock.transport.close()
        self._sockets.clear()
        if self.store is not None:
            await self.store.close()

    @property
    def configured(self) -> bool:
        return any(True for _ in self.sets.engines())

    async def reload(self) -> None:
        """Static sets + the `rtpengine` table; new instances are pinged for their state
        (OpenSIPS pings every node it connects), kept ones keep theirs."""
        definitions: list[tuple[int, str]] = []
        for set_id, sockets in self.static_sets:
            definitions.append((set_id, " ".join(f"{u}={w}" for u, w in sockets)))
        if self.store is not None:
            definitions += [(row.set_id, row.socket) for row in await self.store.rows()]
        known = {(e.set_id, e.url) for e in self.sets.engines()}
        self.sets.load(definitions)
        await self._sync_sockets()
        fresh = [e for e in self.sets.engines() if (e.set_id, e.url) not in known]
        await asyncio.gather(*(self.ping(e) for e in fresh))

    async def _sync_sockets(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = {e.target for e in self.sets.engines()}
        for target in list(self._sockets):
            if target not in wanted:
                sock = self._sockets.pop(target)
                if sock.transport is not None:
                    sock.transport.close()
        for target in wanted - set(self._sockets):
            sock = _EngineSocket(self, target)
            try:
                await loop.create_datagram_endpoint(lambda s=sock: s,  # type: ignore[misc]
                                                    remote_addr=target)
            except OSError as exc:  # an unresolvable host: its requests fail as timeouts
                self.log.warning("rtpengine_socket_failed", target=target, error=repr(exc))
                continue
            self._sockets[target] = sock

    # -- the ng exchange --------------------------------------------------------------------
    async def exchange(self, engine: Engine, message: dict[str, Any]) -> dict[str, Any]:
        """Send one command to `engine` and wait for its reply (retransmitting with the same
        cookie); EngineUnavailable when every transmission went unanswered."""
        sock = self._sockets.get(engine.target)
        if sock is None or sock.transport is None:
            raise EngineUnavailable(f"{engine.url}: no socket")
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[dict[str, Any]] = loop.create_future()
        started = time.perf_counter()
        cookie, datagram = self.ng.request(engine.target, message, self.now(), tag=fut)
        sock.transport.sendto(datagram)
        self._rearm()
        try:
            reply = await fut
        except EngineUnavailable:
            if self.observe is not None:
                self.observe(str(message.get("command")), time.perf_counter() - started, False)
            raise
        except asyncio.CancelledError:
            self.ng.cancel(cookie)
            raise
        if self.observe is not None:
            self.observe(str(message.get("command")), time.perf_counter() - started, True)
        return reply

    def _on_datagram(self, data: bytes) -> None:
        got = self.ng.receive(data)
        if got is None:
            return
        fut = got.tag
        if isinstance(fut, asyncio.Future) and not fut.done():
            fut.set_result(got.message)

    def _unreachable(self, target: Target) -> None:
        for expired in self.ng.fail_target(target):
            self._expire(expired)

    def _expire(self, expired: Expired) -> None:
        fut = expired.tag
        if isinstance(fut, asyncio.Future) and not fut.done():
            fut.set_exception(EngineUnavailable(
                f"udp:{expired.target[0]}:{expired.target[1]} did not answer"))

    def _rearm(self) -> None:
        deadline = self.ng.next_deadline()
        if deadline is None:
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        self._timer_at = deadline
        # The ng clock is the loop's unless a test passed one: wake at the same distance.
        self._timer = loop.call_later(max(0.0, deadline - self.now()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_at = None
        for action in self.ng.due(self.now()):
            if isinstance(action, Retransmit):
                sock = self._sockets.get(action.target)
                if sock is not None and sock.transport is not None:
                    sock.transport.sendto(action.datagram)
            else:
                self._expire(action)
        self._rearm()

    # -- instance state ---------------------------------------------------------------------
    def _changed(self, change: StatusChange | None) -> None:
        if change is None:
            return
        self.log.warning("rtpengine_status", socket=change.url, set=change.set_id,
                         status="active" if change.active else "inactive")
        if self.on_status is not None:
            self.on_status(change)

    def failed(self, engine: Engine) -> None:
        self._changed(self.sets.failed(engine, self.now()))

    def answered(self, engine: Engine) -> None:
        self._changed(self.sets.answered(engine))

    async def ping(self, engine: Engine) -> bool:
        try:
            reply = await self.exchange(engine, {"command": "ping"})
        except EngineUnavailable:
            self.failed(engine)
            return False
        if reply.get("result") != "pong":
            self.failed(engine)
            return False
        self.answered(engine)
        return True

    async def _tick(self) -> None:
        last_ping = self.now()
        while True:
            await asyncio.sleep(self.recheck_tick)
            now = self.now()
            due = self.sets.due_rechecks(now)
            if self.ping_interval > 0 and now - last_ping >= self.ping_interval:
                last_ping = now
                due += [e for e in self.sets.engines() if not e.disabled]
            if due:
                await asyncio.gather(*(self.ping(e) for e in due), return_exceptions=True)

    # -- the instance of a call -------------------------------------------------------------
    def _remember(self, key: str, set_id: int, url: str) -> None:
        self._calls[key] = (set_id, url)
        self._calls.move_to_end(key)
        if len(self._calls) > MEMORY_CALLS:
            self._calls.popitem(last=False)

    async def _recorded(self, key: str) -> tuple[int, str] | None:
        found = self._calls.get(key)
        if found is None and self.store is not None:
            try:
                found = await self.store.find_call(key)
            except Exception as exc:  # a lost database: the home instance is tried
                self.log.warning("call_record_lookup_failed", error=repr(exc))
        return found

    async def _record(self, key: str, engine: Engine) -> None:
        self._remember(key, engine.set_id, engine.url)
        self.counters["records"] += 1
        if self.store is not None:
            try:
                await self.store.record_call(key, engine.set_id, engine.url, time.time())
            except Exception as exc:  # other brokers then probe the set on delete
                self.log.warning("call_record_write_failed", error=repr(exc))

    async def _forget(self, key: str) -> None:
        had = self._calls.pop(key, None)
        if self.store is not None and had is not None:
            try:
                await self.store.forget_call(key)
            except Exception as exc:
                self.log.warning("call_record_delete_failed", error=repr(exc))

    async def _engine_of(self, set_id: int, key: str, hint: str) -> Engine | None:
        """The instance an existing call is on (see the module docstring)."""
        if hint:
            engine = self.sets.find(set_id, hint) or self.sets.find_any(hint)
            if engine is not None:
                return engine
        recorded = await self._recorded(key)
        if recorded is not None:
            engine = self.sets.find(*recorded)
            if engine is not None:
                return engine
        return self.sets.home(set_id, key)

    # -- commands ---------------------------------------------------------------------------
    async def command(self, command: str, facts: SipFacts, *, flags: str = "",
                      sdp: str | None = None, set_id: int = 0, hint: str = "") -> Outcome:
        """offer / answer / delete / query for one SIP message; never raises for rtpengine's
        or the network's failures (the Outcome says what happened)."""
        try:
            message = build_command(command, facts, flags, sdp)
        except FlagError as exc:
            self.counters["errors"] += 1
            return Outcome(False, error=f"bad flags: {exc}")
        command = str(message["command"])  # force-answer may have changed it
        self.counters[{"offer": "offers", "answer": "answers", "delete": "deletes"}.get(
            command, "queries")] += 1
        if set_id not in self.sets.sets:
            self.counters["errors"] += 1
            return Outcome(False, error=f"no rtpengine set {set_id}")
        key = facts.call_id
        if command == "offer" and not facts.to_tag and not facts.reply and not hint:
            outcome = await self._new_call(set_id, key, message)
        else:
            engine = await self._engine_of(set_id, key, hint)
            outcome = await self._existing_call(engine, message)
            if command == "delete" and outcome.ok and outcome.warning.startswith(
                    NOT_FOUND_WARNING) and not hint:
                outcome = await self._probe_delete(set_id, outcome, message)
        if command == "delete" and outcome.ok:
            await self._forget(key)
        if not outcome.ok:
            self.counters["errors"] += 1
        return outcome

    async def _new_call(self, set_id: int, key: str, message: dict[str, Any]) -> Outcome:
        tried: list[Engine] = []
        while True:
            engine = self.sets.select(set_id, key, exclude=tried)
            if engine is None:
                return Outcome(False, error="no rtpengine instance available"
                               + (f" (tried {', '.join(e.url for e in tried)})" if tried
                                  else ""))
            tried.append(engine)
            try:
                reply = await self.exchange(engine, message)
            except EngineUnavailable:
                self.failed(engine)
                self.counters["failovers"] += 1
                continue
            self.answered(engine)
            if reply.get("result") == "error":
                return Outcome(False, engine, reply, str(reply.get("error-reason", "error")))
            if engine is not self.sets.home(set_id, key):
                await self._record(key, engine)
            return Outcome(True, engine, reply)

    async def _existing_call(self, engine: Engine | None, message: dict[str, Any]) -> Outcome:
        if engine is None:
            return Outcome(False, error="no rtpengine instance for this call")
        if engine.disabled:
            return Outcome(False, engine, error=f"{engine.url} is disabled")
        try:
            reply = await self.exchange(engine, message)
        except EngineUnavailable as exc:
            self.failed(engine)
            return Outcome(False, engine, error=str(exc))
        self.answered(engine)
        if reply.get("result") == "error":
            return Outcome(False, engine, reply, str(reply.get("error-reason", "error")))
        return Outcome(True, engine, reply)

    async def _probe_delete(self, set_id: int, first: Outcome,
                            message: dict[str, Any]) -> Outcome:
        for engine in list(self.sets.sets.get(set_id, ())):
            if engine is first.engine or engine.disabled:
                continue
            self.counters["probes"] += 1
            outcome = await self._existing_call(engine, message)
            if outcome.ok and not outcome.warning.startswith(NOT_FOUND_WARNING):
                return outcome
        return first

    async def subscription(self, command: str, call_id: str, *, set_id: int = 0,
                           hint: str = "", to_tag: str = "", sdp: str = "",
                           flags: tuple[str, ...] = ("all",)) -> Outcome:
        """Media forking (SIPREC): `subscribe request` (flag `all`: every leg of the call),
        `subscribe answer` (the recorder's SDP for subscription `to_tag`) or `unsubscribe`,
        on the call's instance (rtpengine >= mr10.0.1.1).  Never raises."""
        if command not in ("subscribe request", "subscribe answer", "unsubscribe"):
            return Outcome(False, error=f"not a subscription command: {command}")
        if not call_id:
            return Outcome(False, error="no call-id")
        message: dict[str, Any] = {"command": command, "call-id": call_id}
        if command == "subscribe request":
            message["flags"] = list(flags)
        else:
            if not to_tag:
                return Outcome(False, error="no to-tag (the subscription)")
            message["to-tag"] = to_tag
        if command == "subscribe answer":
            if not sdp:
                return Outcome(False, error="no SDP")
            message["sdp"] = sdp
        self.counters["subscriptions"] += 1
        if set_id not in self.sets.sets and not hint:
            self.counters["errors"] += 1
            return Outcome(False, error=f"no rtpengine set {set_id}")
        engine = await self._engine_of(set_id, call_id, hint)
        outcome = await self._existing_call(engine, message)
        if not outcome.ok:
            self.counters["errors"] += 1
        return outcome

    async def purge(self) -> int:
        if self.store is None:
            return 0
        return await self.store.purge_calls(time.time() - self.record_max_age)
