"""A small asyncio Event Socket client (inbound mode) around the sans-IO `esl` core.

Why hand-written: no maintained asyncio ESL library fits (research wave2-testbed §3).
greenswitch is gevent, python-ESL a 2016 SWIG binding, aioesl and switchio are abandoned
alphas, and genesis (asyncio, active) supports Python 3.10-3.12 only and pulls fastapi,
opentelemetry, redis<6 and uvicorn into every process.  What SipMesh needs is small:
auth, `event json`, `api`, `bgapi` with Job-UUID correlation, reconnect with re-subscribe
and a heartbeat watchdog; the protocol decisions live in `esl.py` (tested with a fake
clock) and this module only moves bytes and time.

One `EslClient` keeps one box's link up for as long as it runs:

* connect (`connect_timeout`, OpenSIPS esl_connect_timeout), authenticate, subscribe the
  client's events (`event json ...`), then serve: events to `on_event`, load figures to
  `on_change`, answers to the callers of `api()` / `bgapi()`;
* a link that breaks, is refused, fails authentication or goes stale (no HEARTBEAT for
  `heartbeat_timeout`) is closed and dialled again after a backoff: `backoff_initial`
  doubling up to `backoff_max`, each delay drawn in [d/2, d] so many bridges restarting
  together do not redial in step; a link that was up resets the backoff.  The old
  connection is always closed before a new one is opened, so one box never feeds two
  listeners at once (that would duplicate its events).  Events are also de-duplicated by
  (`Core-UUID`, `Event-Sequence`), the box's own numbering, over the last 4096;
* `bgapi` jobs outlive a reconnection: FreeSWITCH sends BACKGROUND_JOB to every listener
  subscribed to it, so a job's result can arrive on the next connection;
* commands are never queued while the link is down: `api()` fails at once
  (`EslUnavailable`), as the routing path must not wait for a box that is away.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from services.freeswitch.boxes import BoxSpec
from services.freeswitch.esl import (
    Authenticated,
    AuthFailed,
    Closing,
    CommandDone,
    EslSession,
    Event,
    Heartbeat,
    JobDone,
    Output,
    Reply,
    Send,
    SessionConfig,
    Subscribed,
    check_command,
)

READ_SIZE = 65536
DEDUP_WINDOW = 4096

# Link states, as fs_list shows them.
CONNECTING, UP, DOWN, STOPPED = "connecting", "up", "down", "stopped"


class EslUnavailable(ConnectionError):
    """The box's ESL link is not up (or went down while the command was in flight)."""


class EslTimeout(TimeoutError):
    """The box did not answer within the command timeout."""


@dataclass
class ClientConfig:
    connect_timeout: float = 5.0
    command_timeout: float = 5.0
    job_timeout: float = 60.0
    heartbeat_timeout: float = 50.0
    backoff_initial: float = 0.5
    backoff_max: float = 10.0


def backoff_delay(attempt: int, initial: float, maximum: float, draw: float) -> float:
    """Delay before redial number `attempt` (0-based): min(max, initial x 2^n), drawn
    in its upper half by `draw` in [0, 1)."""
    nominal = min(maximum, initial * 2.0 ** min(attempt, 30))
    return float(nominal * (0.5 + 0.5 * draw))


class EslClient:
    """One box's Event Socket link, kept up until `stop()` (see the module docstring)."""

    def __init__(self, spec: BoxSpec, events: Sequence[str], config: ClientConfig, *,
                 on_event: Callable[[EslClient, Event], None] | None = None,
                 on_change: Callable[[EslClient], None] | None = None,
                 rand: Callable[[], float] = random.random) -> None:
        self.spec = spec
        self.events: tuple[str, ...] = tuple(dict.fromkeys(events))
        self.config = config
        self.on_event = on_event
        self.on_change = on_change
        self.rand = rand
        self.log = structlog.get_logger("freeswitch.esl").bind(box=spec.id)
        self.state = DOWN
        # The box answered this link's `event json`: it sends them from now on.
        self.subscribed = False
        self.heartbeat: Heartbeat | None = None
        self.last_error = ""
        self.connects = 0  # links authenticated
        self.losses = 0  # links lost after being up
        self.events_in = 0
        self.duplicates = 0
        self.up_since: float | None = None
        self.down_since: float | None = None
        self.last_redial_delay = 0.0
        self._session: EslSession | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._commands: dict[int, asyncio.Future[Reply]] = {}
        self._jobs: dict[str, asyncio.Future[str]] = {}
        self._carried_jobs: dict[str, float] = {}
        self._seen: set[tuple[str, int]] = set()
        self._seen_order: deque[tuple[str, int]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._wake = asyncio.Event()  # stop() interrupts a backoff
        # One loop timer per connection at the session's next deadline (commands, jobs, the
        # heartbeat watchdog), moved only when an earlier deadline appears: a command or a
        # received chunk costs no wake-up of its own.
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at: float | None = None

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        self._abort("client stopped")
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._set_state(STOPPED)
        futures: list[asyncio.Future[Any]] = [*self._commands.values(),
                                              *self._jobs.values()]
        for fut in futures:
            if not fut.done():
                fut.set_exception(EslUnavailable("ESL client stopped"))
        self._commands.clear()
        self._jobs.clear()

    @property
    def up(self) -> bool:
        return self.state == UP

    # -- commands ----------------------------------------------------------------------
    async def api(self, command: str) -> Reply:
        """`api command`: the output (`Reply.body`). EslUnavailable / EslTimeout."""
        return await self._command(lambda s, now: s.api(command, now), command)

    async def bgapi(self, command: str) -> tuple[str, asyncio.Future[str]]:
        """`bgapi command`: its Job-UUID once FreeSWITCH accepted it, and a future of its
        output (the BACKGROUND_JOB body; EslTimeout after `job_timeout`)."""
        job = str(uuid.uuid4())
        result: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._jobs[job] = result
        try:
            reply = await self._command(lambda s, now: s.bgapi(command, job, now), command)
        except BaseException:
            self._jobs.pop(job, None)
            raise
        if not reply.ok:
            self._jobs.pop(job, None)
            result.set_result(reply.text)  # -ERR ...: the answer is the refusal
        return reply.job_uuid or job, result

    async def send_command(self, text: str) -> Reply:
        """Any other command (`event json X`, `nixevent X`, ...)."""
        return await self._command(lambda s, now: s.command(text, now), text)

    async def subscribe(self, events: Sequence[str]) -> None:
        """Adds `events` to this link's subscription (now, and on every redial)."""
        new = [e for e in events if e not in self.events]
        if not new:
            return
        self.events = (*self.events, *new)
        if self.up:
            with contextlib.suppress(EslUnavailable, EslTimeout):
                await self.send_command("event json " + " ".join(new))

    async def unsubscribe(self, events: Sequence[str]) -> None:
        gone = [e for e in events if e in self.events]
        if not gone:
            return
        self.events = tuple(e for e in self.events if e not in gone)
        if self.up:
            with contextlib.suppress(EslUnavailable, EslTimeout):
                await self.send_command("nixevent " + " ".join(gone))

    async def _command(self, make: Callable[[EslSession, float], tuple[int, list[Output]]],
                       text: str) -> Reply:
        check_command(text)
        session = self._session
        if not self.up or session is None:
            raise EslUnavailable(f"ESL link to {self.spec.id} is {self.state}")
        loop = asyncio.get_running_loop()
        token, out = make(session, loop.time())
        fut: asyncio.Future[Reply] = loop.create_future()
        self._commands[token] = fut
        self._handle(out)
        self._arm(session)
        try:
            return await fut
        finally:
            self._commands.pop(token, None)

    # -- the link ----------------------------------------------------------------------
    async def _run(self) -> None:
        attempt = 0
        loop = asyncio.get_running_loop()
        while not self._stopping:
            was_up = await self._connect_once()
            if self._stopping:
                break
            if was_up:
                attempt = 0
            delay = backoff_delay(attempt, self.config.backoff_initial,
                                  self.config.backoff_max, self.rand())
            attempt += 1
            self.last_redial_delay = delay
            self.log.info("esl_redial", delay=round(delay, 3), error=self.last_error)
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(loop.time() + delay):
                    await self._wake.wait()

    async def _connect_once(self) -> bool:
        """One connection, served until it ends; True when it had authenticated."""
        loop = asyncio.get_running_loop()
        self._set_state(CONNECTING)
        try:
            async with asyncio.timeout(self.config.connect_timeout):
                reader, writer = await asyncio.open_connection(self.spec.host, self.spec.port)
        except (OSError, TimeoutError) as exc:
            self.last_error = f"connect: {exc!r}"
            self._set_state(DOWN)
            return False
        session = EslSession(SessionConfig(
            password=self.spec.password, user=self.spec.user, events=self.events,
            command_timeout=self.config.command_timeout, job_timeout=self.config.job_timeout,
            heartbeat_timeout=self.config.heartbeat_timeout), now=loop.time())
        session.adopt_jobs(self._carried_jobs, loop.time())
        self._session, self._writer = session, writer
        self.subscribed = False
        authenticated = False
        self._arm(session)
        try:
            async with asyncio.timeout(self.config.connect_timeout) as auth_deadline:
                while session.state != "ready":
                    if not await self._read(reader, session):
                        return False
                authenticated = True
                auth_deadline.reschedule(None)
                while await self._read(reader, session):
                    pass
        except TimeoutError:
            self.last_error = "no authentication within the connect timeout"
            self._handle(session.connection_lost(self.last_error))
        except (OSError, asyncio.IncompleteReadError) as exc:
            if session.state != "closed":
                self.last_error = f"read: {exc!r}"
                self._handle(session.connection_lost(self.last_error))
        finally:
            self._disarm()
            self._carried_jobs = session.jobs
            self._session = None
            self._writer = None
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            self.subscribed = False
            if authenticated:
                self.losses += 1
            self._fail_commands(f"ESL link to {self.spec.id} lost: {self.last_error}")
            if not self._stopping:
                self._set_state(DOWN)
        return authenticated

    async def _read(self, reader: asyncio.StreamReader, session: EslSession) -> bool:
        data = await reader.read(READ_SIZE)
        now = asyncio.get_running_loop().time()
        if not data:
            if session.state != "closed":  # else the reason is already known (stale, ...)
                self.last_error = "connection closed by FreeSWITCH"
                self._handle(session.connection_lost(self.last_error))
            return False
        self._handle(session.receive(data, now))
        self._arm(session)
        return session.state != "closed"

    def _arm(self, session: EslSession) -> None:
        deadline = session.next_deadline()
        if deadline is None or session.state == "closed":
            return
        if self._timer_at is not None and self._timer_at <= deadline:
            return  # an earlier wake-up is due; it re-arms after firing
        self._disarm()
        self._timer_at = deadline
        self._timer = asyncio.get_running_loop().call_at(deadline, self._on_timer, session)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
        self._timer, self._timer_at = None, None

    def _on_timer(self, session: EslSession) -> None:
        """Command/job deadlines and the heartbeat watchdog of one connection."""
        self._timer, self._timer_at = None, None
        if session is not self._session or session.state == "closed":
            return
        now = asyncio.get_running_loop().time()
        self._handle(session.expire(now))
        if session.heartbeat_stale(now):
            self.last_error = "no HEARTBEAT within heartbeat_timeout (stale link)"
            self.log.warning("esl_stale", timeout=self.config.heartbeat_timeout)
            self._handle(session.connection_lost(self.last_error))
            self._abort(self.last_error)
            return
        self._arm(session)

    def _abort(self, reason: str) -> None:
        """Closes the current connection at once (its reader then ends the serve loop)."""
        writer = self._writer
        if writer is not None:
            writer.transport.abort()

    # -- what the session says -----------------------------------------------------------
    def _handle(self, outputs: list[Output]) -> None:
        for item in outputs:
            if isinstance(item, Send):
                if self._writer is not None and not self._writer.is_closing():
                    self._writer.write(item.data)
            elif isinstance(item, CommandDone):
                fut = self._commands.get(item.token)
                if fut is not None and not fut.done():
                    if item.reply is not None:
                        fut.set_result(item.reply)
                    elif "timeout" in item.error:
                        fut.set_exception(EslTimeout(item.error))
                    else:
                        fut.set_exception(EslUnavailable(item.error))
            elif isinstance(item, Event):
                self._on_event(item)
            elif isinstance(item, Heartbeat):
                self.heartbeat = item
                if self.on_change is not None:
                    self.on_change(self)
            elif isinstance(item, JobDone):
                job = self._jobs.pop(item.job_uuid, None)
                if job is not None and not job.done():
                    if item.error:
                        job.set_exception(EslTimeout(item.error))
                    else:
                        job.set_result(item.body)
            elif isinstance(item, Subscribed):
                self.subscribed = item.ok
                if self.on_change is not None:
                    self.on_change(self)
            elif isinstance(item, Authenticated):
                self.connects += 1
                self.last_error = ""
                self._set_state(UP)
            elif isinstance(item, AuthFailed):
                self.last_error = f"authentication refused: {item.reason}"
                self.log.warning("esl_auth_failed", reason=item.reason)
            elif isinstance(item, Closing):
                if not self.last_error:
                    self.last_error = item.reason
                self._abort(item.reason)

    def _on_event(self, event: Event) -> None:
        seq = event.sequence
        if seq is not None:
            key = (event.core_uuid, seq)
            if key in self._seen:
                self.duplicates += 1
                return
            self._seen.add(key)
            self._seen_order.append(key)
            if len(self._seen_order) > DEDUP_WINDOW:
                self._seen.discard(self._seen_order.popleft())
        self.events_in += 1
        if self.on_event is not None:
            try:
                self.on_event(self, event)
            except Exception:  # one consumer's bug must not take the link down
                self.log.exception("esl_event_handler_failed", event=event.name)

    def _fail_commands(self, reason: str) -> None:
        for fut in self._commands.values():
            if not fut.done():
                fut.set_exception(EslUnavailable(reason))

    def _set_state(self, state: str) -> None:
        if state == self.state:
            return
        loop = asyncio.get_running_loop()
        previous, self.state = self.state, state
        if state == UP:
            self.up_since, self.down_since = loop.time(), None
            self.log.info("esl_up", events=list(self.events))
        elif previous == UP or (state == DOWN and self.down_since is None):
            self.down_since = loop.time()
            if previous == UP:
                self.log.warning("esl_down", error=self.last_error)
        if self.on_change is not None:
            self.on_change(self)

