"""`ctx.freeswitch` in edge routing code: the FreeSWITCH bridge as the edge sees it.

The edge keeps one `Watch` stream open to the bridge (`sipmesh.freeswitch.v1`, found in
discovery as service `freeswitch`, `grpc` in its metadata, or at `[edge.freeswitch]
addresses`).  Over it come a snapshot of every box (link state, HEARTBEAT load) on every
change and the FreeSWITCH events the routing handlers asked for.  So, in routing code:

    uri = ctx.freeswitch.select("media")          # never waits: the local view
    if uri is None:
        return ctx.reply(503, "No FreeSWITCH available")
    ctx.forward(next_hop=uri)

    outcome = await ctx.freeswitch.api("10.0.0.11:8021", "uuid_kill " + uuid)
    if outcome.ok: ...                              # outcome.code / .body / .error

and, once at start-up (`make_router(setup)`), handlers for FreeSWITCH events (OpenSIPS
`event_route[E_FREESWITCH]`):

    def make_router(setup):
        fs = setup.services["freeswitch"]
        fs.on_event("CHANNEL_HANGUP", on_hangup)    # on_hangup(event) or async def
        return MyRouter()

`select(group)` uses the box loads pushed by the bridge (services.freeswitch.balancing:
policy `weight` or `load` as the bridge is configured) and skips a box whose link is down
or whose last heartbeat is older than its `stale_after`.  While the stream is broken the
view ages on the edge's own clock, so boxes turn stale and stop taking calls rather than
being chosen on old figures; the stream is redialled with a backoff.  An event handler
runs outside the SIP path, one at a time per event order; a slow async handler delays
only the events after it (bounded queue, overflow counted).  Outcome codes (`api`,
`bgapi`): 1 FreeSWITCH answered (an `-ERR` is an answer, as freeswitch_esl), -1 no such
box, -2 its ESL link is down, -3 no answer in time, -4 a command ESL cannot carry,
-5 the bridge cannot be reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2 as pb
from contracts.generated.sipmesh.freeswitch.v1 import freeswitch_pb2_grpc as pb_grpc
from services.freeswitch.balancing import Balancer, BoxLoad
from services.freeswitch.boxes import DEFAULT_GROUP

if TYPE_CHECKING:
    from shared.service.runtime import ServiceRuntime

UNREACHABLE = -5
EVENT_QUEUE = 10_000


@dataclass(frozen=True)
class EdgeFreeswitchConfig:
    """`[edge.freeswitch]` (or `SIPMESH_EDGE_FREESWITCH_<FIELD>`)."""

    enabled: bool = True
    service: str = "freeswitch"  # discovery name of the bridge
    addresses: tuple[str, ...] = ()  # fixed host:port gRPC addresses (else discovery)
    timeout: float = 6.0  # api/bgapi deadline (the bridge's own command timeout is 5 s)
    redial_max: float = 5.0  # stream redial backoff cap (s)


@dataclass(frozen=True, slots=True)
class FsOutcome:
    code: int
    body: str = ""
    error: str = ""
    job_uuid: str = ""

    @property
    def ok(self) -> bool:
        return self.code == 1


@dataclass(frozen=True, slots=True)
class FsEvent:
    """A FreeSWITCH event (E_FREESWITCH): name, sender (box host), box, body (JSON)."""

    name: str
    sender: str
    box: str
    body: str

    @property
    def headers(self) -> dict[str, Any]:
        """The event's headers (the parsed JSON body)."""
        try:
            doc = json.loads(self.body)
        except ValueError:
            return {}
        return doc if isinstance(doc, dict) else {}


Handler = Callable[[FsEvent], "Awaitable[None] | None"]


class FreeswitchRouting:
    """What `ctx.freeswitch` is (see the module docstring)."""

    def __init__(self, config: EdgeFreeswitchConfig | None = None, *, registry: Any = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config or EdgeFreeswitchConfig()
        self.registry = registry
        self.clock = clock
        self.log = structlog.get_logger("edge.freeswitch")
        self.balancer = Balancer()
        self.connected = False
        self.target = ""
        self.snapshots = 0
        self.events_dropped = 0
        self.handler_errors = 0
        self._handlers: dict[str, list[Handler]] = {}
        self._channel: grpc.aio.Channel | None = None
        self._stub: Any = None
        self._task: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._events: asyncio.Queue[FsEvent] = asyncio.Queue(EVENT_QUEUE)
        self._call: Any = None
        self._names_changed = False
        self._closing = False

    # -- routing API -------------------------------------------------------------------
    def select(self, group: str = DEFAULT_GROUP) -> str | None:
        """The SIP URI of the box that should take the next call of `group`, or None."""
        box = self.balancer.select(group, self.clock())
        return box.sip_uri if box is not None else None

    def select_box(self, group: str = DEFAULT_GROUP) -> BoxLoad | None:
        """As `select`, the whole box (id, figures) rather than its URI."""
        return self.balancer.select(group, self.clock())

    def boxes(self, group: str | None = None) -> list[BoxLoad]:
        return [b for b in self.balancer.boxes.values() if group is None or b.group == group]

    def usable(self, group: str = DEFAULT_GROUP) -> list[BoxLoad]:
        return self.balancer.candidates(group, self.clock())

    async def api(self, box: str, command: str) -> FsOutcome:
        """`api command` on `box` (host:port, host, or fs:// URL): its output."""
        stub = self._stub
        if stub is None:
            return FsOutcome(UNREACHABLE, error="no FreeSWITCH bridge known")
        try:
            reply = await stub.Api(pb.ApiRequest(box=box, command=command),
                                   timeout=self.config.timeout)
        except grpc.aio.AioRpcError as exc:
            return FsOutcome(UNREACHABLE, error=f"{exc.code().name}: {exc.details()}")
        return FsOutcome(reply.code, reply.body, reply.error)

    async def bgapi(self, box: str, command: str, *, wait: bool = False) -> FsOutcome:
        """`bgapi command` on `box`: its Job-UUID, and with `wait` its output."""
        stub = self._stub
        if stub is None:
            return FsOutcome(UNREACHABLE, error="no FreeSWITCH bridge known")
        try:
            reply = await stub.BgApi(pb.BgApiRequest(box=box, command=command, wait=wait),
                                     timeout=None if wait else self.config.timeout)
        except grpc.aio.AioRpcError as exc:
            return FsOutcome(UNREACHABLE, error=f"{exc.code().name}: {exc.details()}")
        return FsOutcome(reply.code, reply.body, reply.error, reply.job_uuid)

    def on_event(self, name: str, handler: Handler) -> None:
        """Calls `handler(event)` for each FreeSWITCH event `name` (`ALL` for every one,
        `CUSTOM <subclass>`) republished by the bridge: OpenSIPS event_route."""
        first = name not in self._handlers
        self._handlers.setdefault(name, []).append(handler)
        if first and self._call is not None:
            self._names_changed = True
            self._call.cancel()  # the stream is opened again with the new name

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        if not self.config.enabled or self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._task = loop.create_task(self._run())
        self._dispatcher = loop.create_task(self._dispatch())

    async def close(self) -> None:
        self._closing = True
        for task in (self._task, self._dispatcher):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._channel is not None:
            await self._channel.close()
            self._channel = None
        self._stub = None

    async def _targets(self) -> list[str]:
        if self.config.addresses:
            return list(self.config.addresses)
        if self.registry is None:
            return []
        try:
            found = await self.registry.healthy(self.config.service)
        except Exception:
            return []
        return sorted({i.meta["grpc"] for i in found if i.meta.get("grpc")})

    def _use(self, target: str) -> Any:
        if target != self.target or self._stub is None:
            old = self._channel
            self._channel = grpc.aio.insecure_channel(
                target, options=[("grpc.keepalive_time_ms", 10_000),
                                 ("grpc.keepalive_permit_without_calls", 1)])
            # grpc's generated stubs carry no annotations
            self._stub = pb_grpc.FreeswitchStub(self._channel)  # type: ignore[no-untyped-call]
            self.target = target
            if old is not None:
                task = asyncio.get_running_loop().create_task(old.close())
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return self._stub

    async def _run(self) -> None:
        delay = 0.2
        while True:
            targets = await self._targets()
            for target in targets:
                if await self._stream(self._use(target)):
                    delay = 0.2  # it worked for a while: redial quickly
                    break
            self.connected = False
            if self._names_changed:
                self._names_changed = False
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.config.redial_max)

    async def _stream(self, stub: Any) -> bool:
        """Serves one Watch stream; True when it delivered at least one snapshot."""
        got = False
        call = stub.Watch(pb.WatchRequest(events=sorted(self._handlers)))
        self._call = call
        try:
            async for update in call:
                if update.HasField("boxes"):
                    self._apply(update.boxes)
                    got = self.connected = True
                elif update.HasField("event"):
                    ev = update.event
                    try:
                        self._events.put_nowait(FsEvent(ev.name, ev.sender, ev.box, ev.body))
                    except asyncio.QueueFull:
                        self.events_dropped += 1
        except grpc.aio.AioRpcError as exc:
            if exc.code() != grpc.StatusCode.CANCELLED:
                self.log.info("freeswitch_watch_lost", target=self.target,
                              error=f"{exc.code().name}: {exc.details()}")
        except asyncio.CancelledError:
            # on_event() cancelled the call to reopen it with a new name: carry on;
            # anything else (close()) is a real cancellation.
            if self._closing or not self._names_changed:
                raise
        finally:
            self._call = None
            call.cancel()
        return got

    def _apply(self, snapshot: Any) -> None:
        now = self.clock()
        if snapshot.policy and (snapshot.policy != self.balancer.policy or
                                snapshot.max_weight != self.balancer.max_weight):
            self.balancer = Balancer(snapshot.policy, snapshot.max_weight or 100.0)
        self.balancer.update(BoxLoad(
            id=b.id, group=b.group, sip_uri=b.sip_uri, up=b.up,
            session_count=b.session_count, max_sessions=b.max_sessions, idle_cpu=b.idle_cpu,
            heartbeat_at=(now - b.heartbeat_age) if b.heartbeat_age >= 0 else None,
            stale_after=b.stale_after) for b in snapshot.boxes)
        self.snapshots += 1

    async def _dispatch(self) -> None:
        while True:
            event = await self._events.get()
            handlers = [*self._handlers.get(event.name, ()), *self._handlers.get("ALL", ())]
            subclass = event.headers.get("Event-Subclass", "") if event.name == "CUSTOM" \
                else ""
            if subclass:
                handlers += self._handlers.get(f"CUSTOM {subclass}", [])
            for handler in handlers:
                try:
                    result = handler(event)
                    if inspect.isawaitable(result):
                        await result
                except Exception:  # a routing script's bug must not stop the others
                    self.handler_errors += 1
                    self.log.exception("freeswitch_event_handler_failed", event=event.name)

    def view(self) -> dict[str, Any]:
        """This edge's view (MI fs_edge_view)."""
        now = self.clock()
        weights: dict[str, float] = {}
        for group in {b.group for b in self.balancer.boxes.values()}:
            weights.update(self.balancer.weights(group, now))
        return {
            "Connected": self.connected, "Bridge": self.target,
            "Policy": self.balancer.policy, "Snapshots": self.snapshots,
            "Boxes": [{
                "id": b.id, "Group": b.group, "SIP": b.sip_uri, "Up": b.up,
                "Usable": b.usable(now), "Weight": round(weights.get(b.id, 0.0), 3),
                "Session-Count": b.session_count, "Max-Sessions": b.max_sessions,
                "Idle-CPU": b.idle_cpu,
                "Heartbeat-Age": round(now - b.heartbeat_at, 3)
                if b.heartbeat_at is not None else None,
                "Picks": self.balancer.picks.get(b.id, 0),
            } for b in self.balancer.boxes.values()],
        }


def attach_to_edge(runtime: ServiceRuntime) -> FreeswitchRouting:
    """The edge's hook: builds `ctx.freeswitch` from `[edge.freeswitch]`, starts and stops
    it with the edge's runtime, and adds MI `fs_edge_view` (fan-out: every edge answers
    with what it sees)."""
    from shared.config import load_section

    config = load_section(EdgeFreeswitchConfig, "edge.freeswitch")
    client = FreeswitchRouting(config, registry=runtime.registry)

    @runtime.command("fs_edge_view", fanout=True,
                     doc="the FreeSWITCH boxes as this edge sees them (load, picks)")
    async def fs_edge_view() -> Any:
        return {"Edges": [{"Instance": runtime.instance_id, **client.view()}]}

    runtime.on_start(client.start)
    runtime.on_stop(client.close)
    return client

