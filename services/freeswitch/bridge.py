"""The bridge: every configured FreeSWITCH box's link, its events, its commands, its load.

`Bridge` owns one `EslClient` per box (boxes from `[freeswitch] boxes`, the store's table,
and MI) and:

* subscribes on every box `HEARTBEAT` (load figures) and `BACKGROUND_JOB` (bgapi results)
  besides the box's own events and `[freeswitch] events`;
* republishes each FreeSWITCH event a box is subscribed to (by name, `ALL`, or
  `CUSTOM <subclass>`) on the mesh's event bus as `E_FREESWITCH` {name, sender, body, box}
  (OpenSIPS 2.4 freeswitch_scripting: name = Event-Name, sender = the box's address,
  body = the event's full JSON text; `box` = host:port is SipMesh's), so it reaches
  RabbitMQ and every subscriber at the gateway. HEARTBEAT and BACKGROUND_JOB, subscribed
  for the bridge's own use, are republished only when asked for, except the
  BACKGROUND_JOB of a job started through the bridge (`fs_bgapi`), which always is:
  whoever started it wants the result;
* hands the same events to the `Watch` streams (the edges' routing handlers) that asked
  for their names, and a snapshot of every box's state and load on every change;
* across a rolling restart, hands over to its successor (`services.freeswitch.handover`):
  a bridge started in standby keeps its events until `take_over(marks)`; a stopping one
  `freeze()`s and says where it stopped (`marks()`).

Nothing here blocks on a box: a command to a box whose link is down fails at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import structlog

from services.freeswitch.boxes import (
    DEFAULT_PORT,
    BoxSpec,
    BoxUrlError,
    box_id,
    names_port,
    parse_fs_url,
)
from services.freeswitch.client import UP, ClientConfig, EslClient
from services.freeswitch.config import FreeswitchConfig
from services.freeswitch.esl import Event
from services.freeswitch.handover import Mark, after_marks
from services.freeswitch.store import BoxStore

INTERNAL_EVENTS = ("HEARTBEAT", "BACKGROUND_JOB")
WATCH_QUEUE = 10_000  # events waiting for one slow Watch stream before it drops some
SNAPSHOT_INTERVAL = 0.05  # a Watch stream gets at most one box snapshot per this
STANDBY_KEEP = 200_000  # events a bridge in standby keeps for its take-over


class UnknownBox(LookupError):
    """No box matches the reference."""


@dataclass
class BoxEntry:
    spec: BoxSpec
    client: EslClient
    events: tuple[str, ...]  # what is republished (the box's + [freeswitch] events)

    def wants(self, event: Event) -> bool:
        names = self.events
        if "ALL" in names or event.name in names:
            return True
        subclass = event.headers.get("Event-Subclass", "")
        return event.name == "CUSTOM" and bool(subclass) and f"CUSTOM {subclass}" in names


@dataclass(eq=False)
class Watcher:
    """One Watch stream: the event names it wants and what waits to be sent to it."""

    names: frozenset[str]
    queue: asyncio.Queue[Any] = field(default_factory=lambda: asyncio.Queue(WATCH_QUEUE))
    snapshot_due: bool = True
    dropped: int = 0

    def wants(self, event: Event) -> bool:
        if "ALL" in self.names or event.name in self.names:
            return True
        subclass = event.headers.get("Event-Subclass", "")
        return event.name == "CUSTOM" and f"CUSTOM {subclass}" in self.names


class Bridge:
    def __init__(self, config: FreeswitchConfig, *, events: Any = None,
                 store: BoxStore | None = None) -> None:
        self.config = config
        self.bus = events
        self.store = store
        self.log = structlog.get_logger("freeswitch")
        self.boxes: dict[str, BoxEntry] = {}
        self.watchers: set[Watcher] = set()
        self.client_config = ClientConfig(
            connect_timeout=config.connect_timeout, command_timeout=config.command_timeout,
            job_timeout=config.job_timeout, heartbeat_timeout=config.stale_after,
            backoff_initial=config.backoff_initial, backoff_max=config.backoff_max)
        self.our_jobs: dict[str, float] = {}  # Job-UUID -> deadline (loop time)
        # Called with ("api" | "bgapi", seconds) per command: the latency histogram.
        self.observe: Callable[[str, float], None] | None = None
        self.stats = {"events_received": 0, "events_published": 0, "events_dropped": 0,
                      "api_commands": 0, "api_failures": 0, "bgapi_jobs": 0,
                      "handover_replayed": 0}
        # Rolling restart (services.freeswitch.handover): in standby the events are kept,
        # not republished; frozen (stopping, handed over) they are no longer handled.
        self.standby = False
        self.frozen = False
        self._kept: deque[tuple[str, Event]] = deque(maxlen=STANDBY_KEEP)
        self._last: dict[str, Mark] = {}  # box -> the last event handled
        self._inflight = 0  # api/bgapi commands waiting for their box
        self._settled = asyncio.Event()
        self._settled.set()

    # -- the set of boxes ----------------------------------------------------------------
    async def start(self) -> None:
        specs = {s.id: s for s in self.config.box_specs()}
        if self.store is not None:
            for spec in await self.store.boxes():
                specs.setdefault(spec.id, spec)  # config wins over the table
        for spec in specs.values():
            self._add(spec)
        if not self.boxes:
            self.log.info("no_boxes", hint="no FreeSWITCH box configured: idle until "
                          "[freeswitch] boxes, the store's table or MI fs_add names one")

    async def settle(self, timeout: float) -> None:
        """Waits (at most `timeout` s) for the commands in flight to be answered."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._settled.wait(), timeout)

    def _began(self) -> None:
        self._inflight += 1
        self._settled.clear()

    def _ended(self) -> None:
        self._inflight -= 1
        if self._inflight == 0:
            self._settled.set()

    async def stop(self) -> None:
        for entry in list(self.boxes.values()):
            await entry.client.stop()
        self.boxes.clear()

    def _events_for(self, spec: BoxSpec) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*spec.events, *self.config.events)))

    def _add(self, spec: BoxSpec) -> BoxEntry:
        republished = self._events_for(spec)
        client = EslClient(spec, (*INTERNAL_EVENTS, *republished), self.client_config,
                           on_event=self._on_event, on_change=self._on_change)
        entry = BoxEntry(spec, client, republished)
        self.boxes[spec.id] = entry
        client.start()
        self.log.info("box_added", box=spec.id, group=spec.group, sip=spec.sip_uri,
                      source=spec.source, events=list(republished))
        self._changed()
        return entry

    async def add(self, spec: BoxSpec, *, persist: bool) -> None:
        """Adds (or replaces) a box; `persist` writes it to the store first."""
        if persist:
            if self.store is None:
                raise RuntimeError("no store configured ([freeswitch] use_store = false)")
            await self.store.put(spec)
        old = self.boxes.pop(spec.id, None)
        if old is not None:
            await old.client.stop()
        self._add(spec)

    async def remove(self, ref: str) -> BoxSpec:
        entry = self.find(ref)
        if self.store is not None:
            await self.store.remove(entry.spec.host, entry.spec.port)
        self.boxes.pop(entry.spec.id, None)
        await entry.client.stop()
        self.log.info("box_removed", box=entry.spec.id)
        self._changed()
        return entry.spec

    async def reload(self) -> int:
        """OpenSIPS fs_reload: the table's boxes replace those that came from it (and
        from MI); boxes of the config file stay. Returns how many boxes there are."""
        if self.store is None:
            raise RuntimeError("no store configured ([freeswitch] use_store = false)")
        wanted = {s.id: s for s in await self.store.boxes()}
        for box, entry in list(self.boxes.items()):
            if entry.spec.source == "config":
                wanted.pop(box, None)
                continue
            if wanted.get(box) != entry.spec:
                self.boxes.pop(box)
                await entry.client.stop()
                self._changed()
        for box, spec in wanted.items():
            if box not in self.boxes:
                self._add(spec)
        return len(self.boxes)

    async def subscribe(self, url: str, events: Iterable[str]) -> None:
        """OpenSIPS fs_subscribe: the box (known, or new from a URL with a password)
        republishes `events` too.  A new box is kept until restart (not stored)."""
        names = tuple(events)
        try:
            entry = self.find(url)
        except UnknownBox:
            spec = parse_fs_url(url, source="mi")
            self._add(replace(spec, events=tuple(dict.fromkeys((*spec.events, *names)))))
            return
        new = tuple(n for n in names if n not in entry.events)
        entry.events = (*entry.events, *new)
        await entry.client.subscribe(new)

    async def unsubscribe(self, url: str, events: Iterable[str]) -> None:
        entry = self.find(url)
        gone = [n for n in events if n in entry.events]
        entry.events = tuple(n for n in entry.events if n not in gone)
        # The bridge's own subscriptions stay whatever the operator drops.
        await entry.client.unsubscribe([n for n in gone if n not in INTERNAL_EVENTS])

    def find(self, ref: str) -> BoxEntry:
        """The box named by `ref`: `host:port`, `host` (port 8021, or the one box on that
        host), or an fs:// URL whose password may be left out."""
        text = ref.strip()
        if text in self.boxes:
            return self.boxes[text]
        try:
            spec = parse_fs_url(text, need_password=False)
        except BoxUrlError as exc:
            raise UnknownBox(str(exc)) from None
        found = self.boxes.get(spec.id)
        if found is not None:
            return found
        if spec.port == DEFAULT_PORT and not names_port(text):
            on_host = [e for e in self.boxes.values() if e.spec.host == spec.host]
            if len(on_host) == 1:
                return on_host[0]
        raise UnknownBox(f"no FreeSWITCH box {box_id(spec.host, spec.port)}")

    # -- commands ----------------------------------------------------------------------
    async def api(self, ref: str, command: str) -> str:
        entry = self.find(ref)
        self.stats["api_commands"] += 1
        started = asyncio.get_running_loop().time()
        self._began()
        try:
            reply = await entry.client.api(command)
        except Exception:
            self.stats["api_failures"] += 1
            raise
        finally:
            self._ended()
            if self.observe is not None:
                self.observe("api", asyncio.get_running_loop().time() - started)
        return reply.body

    async def bgapi(self, ref: str, command: str) -> tuple[str, asyncio.Future[str], bool]:
        """Starts a job; (Job-UUID, future of its output, accepted)."""
        entry = self.find(ref)
        self.stats["bgapi_jobs"] += 1
        loop = asyncio.get_running_loop()
        started = loop.time()
        self._began()
        try:
            job, result = await entry.client.bgapi(command)
        finally:
            self._ended()
            if self.observe is not None:
                self.observe("bgapi", loop.time() - started)
        accepted = not result.done()
        if accepted:
            self.our_jobs[job] = loop.time() + self.config.job_timeout
        # Nobody may ever await it (MI returns the Job-UUID only): retrieve its outcome.
        result.add_done_callback(_consume)
        self._expire_jobs(loop.time())
        return job, result, accepted

    def _expire_jobs(self, now: float) -> None:
        for job in [j for j, deadline in self.our_jobs.items() if deadline < now]:
            del self.our_jobs[job]

    # -- hand-over (rolling restart) ---------------------------------------------------
    def linked(self) -> bool:
        """Every box's link is up and subscribed (or has failed at least once): what a
        bridge in standby waits for before it says it is ready."""
        return all((e.client.up and e.client.subscribed) or e.client.last_error
                   for e in self.boxes.values())

    def freeze(self) -> dict[str, Mark]:
        """Stops handling events (this bridge hands over); where it stopped, per box."""
        self.frozen = True
        return dict(self._last)

    def take_over(self, marks: dict[str, Mark], jobs: Iterable[str] = ()) -> int:
        """Leaves standby: republishes the kept events the old bridge had not handled
        (after `marks`; its `jobs` become ours), then handles events live. Returns how
        many kept events were republished."""
        if not self.standby:
            return 0
        # Our own jobs' results are republished even if covered (the old bridge did not
        # know them); the old bridge's jobs only after its marks (it raised the rest).
        replay = after_marks(list(self._kept), marks, list(self.our_jobs))
        loop_now = asyncio.get_running_loop().time()
        for job in jobs:
            self.our_jobs.setdefault(job, loop_now + self.config.job_timeout)
        self.standby = False
        self._kept.clear()
        for box, event in replay:
            entry = self.boxes.get(box)
            if entry is not None:
                self._handle_event(entry, event)
        self.stats["handover_replayed"] += len(replay)
        self.log.info("handover_taken", replayed=len(replay), marks=len(marks))
        return len(replay)

    # -- events in -----------------------------------------------------------------------
    def _on_event(self, client: EslClient, event: Event) -> None:
        entry = self.boxes.get(client.spec.id)
        if entry is None or entry.client is not client or self.frozen:
            return  # a removed box's last words, or handed over
        self.stats["events_received"] += 1
        if event.sequence is not None:
            self._last[client.spec.id] = Mark(event.core_uuid, event.sequence)
        if self.standby:
            if len(self._kept) == self._kept.maxlen:
                self.stats["events_dropped"] += 1
            self._kept.append((client.spec.id, event))
            return
        self._handle_event(entry, event)

    def _handle_event(self, entry: BoxEntry, event: Event) -> None:
        ours = event.name == "BACKGROUND_JOB" and \
            self.our_jobs.pop(event.headers.get("Job-UUID", ""), None) is not None
        spec = entry.spec
        if ours or entry.wants(event):
            params = {"name": event.name, "sender": spec.host, "body": event.raw,
                      "box": spec.id}
            if self.bus is not None and self.bus.publish("E_FREESWITCH", params) is not None:
                self.stats["events_published"] += 1
            else:
                self.stats["events_dropped"] += 1
        for watcher in self.watchers:
            if watcher.wants(event) and (ours or entry.wants(event)):
                try:
                    watcher.queue.put_nowait(("event", spec, event))
                except asyncio.QueueFull:
                    watcher.dropped += 1

    # -- box states to the edges -----------------------------------------------------------
    def _on_change(self, client: EslClient) -> None:
        self._changed()

    def _changed(self) -> None:
        for watcher in self.watchers:
            if not watcher.snapshot_due:
                watcher.snapshot_due = True
                with contextlib.suppress(asyncio.QueueFull):
                    watcher.queue.put_nowait(("boxes",))

    def watch(self, names: Iterable[str]) -> Watcher:
        watcher = Watcher(frozenset(names))
        watcher.queue.put_nowait(("boxes",))
        self.watchers.add(watcher)
        return watcher

    def unwatch(self, watcher: Watcher) -> None:
        self.watchers.discard(watcher)

    def states(self, now: float) -> list[dict[str, Any]]:
        """Every box as the edges see it (the Watch snapshot and fs_list's extras)."""
        out = []
        for entry in self.boxes.values():
            spec, client = entry.spec, entry.client
            beat = client.heartbeat
            out.append({
                "id": spec.id, "group": spec.group, "sip_uri": spec.sip_uri,
                "up": client.state == UP, "state": client.state,
                "session_count": beat.session_count if beat else 0,
                "max_sessions": beat.max_sessions if beat else 0,
                "idle_cpu": beat.idle_cpu if beat else 0.0,
                "heartbeat_age": (now - beat.at) if beat else -1.0,
                "stale_after": self.config.stale_after,
            })
        return out


def _consume(fut: asyncio.Future[str]) -> None:
    if not fut.cancelled():
        fut.exception()
