"""The FreeSWITCH Event Socket protocol (inbound mode), sans-IO: bytes in, decisions out.

No sockets, no asyncio, no clock of its own: the adapter (`services.freeswitch.client`)
feeds received bytes with `receive(data, now)`, sends what `Send` outputs carry, and asks
`expire(now)` / `heartbeat_stale(now)` at the deadlines `next_deadline()` names.  Written
from the Event Socket documentation (mod_event_socket) and its source's behaviour:

Framing (mod_event_socket, "Event Socket" wiki page):
  * a message is a block of `Name: value` header lines ended by an empty line (`\\n\\n`);
  * when the block has `Content-Length: N`, exactly N *bytes* of body follow (UTF-8 text
    may be split anywhere by TCP; the count is of bytes, never of characters);
  * `Content-Type` says what the message is:
      - `auth/request`: sent by the server on connect; the client answers `auth <password>`
        (or `userauth <user>:<password>`) followed by a blank line;
      - `command/reply`: the answer to one command, in `Reply-Text` (`+OK ...` / `-ERR ...`);
        `bgapi` answers `+OK Job-UUID: <uuid>` with a `Job-UUID` header;
      - `api/response`: the answer to `api <cmd>`, the command's output as the body;
      - `text/event-json`: an event (after `event json <names>`), the body a JSON object of
        the event's headers (all strings) plus `_body` when the event has one;
      - `text/disconnect-notice`: the server is about to close (wrong password, `exit`,
        a listener killed for being too slow); `text/rude-rejection`: refused by ACL.
Ordering: the server answers the commands of one connection one at a time, in the order
they were sent, so pending commands are a FIFO; a reply matches the oldest one.  A command
whose caller gave up (timeout) keeps its slot, so the late reply is consumed and the next
reply still reaches the right caller.
Background jobs: `bgapi <cmd>` with a `Job-UUID:` header line makes the server use that
UUID (the client chooses it, so the result can never race the reply); the result arrives
later as a `BACKGROUND_JOB` event with that `Job-UUID`, its body the command's output.
Such events go to every listener subscribed to `BACKGROUND_JOB`, not only the one that
started the job.
Heartbeats: a subscribed `HEARTBEAT` event arrives every `event-heartbeat-interval`
(FreeSWITCH's default: 20 s) with `Session-Count`, `Max-Sessions`, `Idle-CPU` as strings.
A link that delivers no heartbeat for `heartbeat_timeout` is stale: a half-open TCP
connection, a stalled server or a killed listener (opensips#3468: OpenSIPS kept stale
figures after such a loss and never reconnected; here the adapter drops and redials).
Commands longer than 4 KB are refused by OpenSIPS' driver; here by `command()` too, and a
command text may not carry a blank line (it would end the command early).
"""

from __future__ import annotations

import json
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

MAX_HEADER_BLOCK = 64 * 1024  # a header block larger than this is not ESL
MAX_BODY = 32 * 1024 * 1024  # an event or api output larger than this is refused
MAX_COMMAND = 4096  # OpenSIPS' freeswitch driver refuses longer commands


class ProtocolError(Exception):
    """The peer sent bytes that are not the Event Socket protocol: the link must close."""


@dataclass(frozen=True, slots=True)
class Frame:
    """One ESL message: its header lines (names as sent) and its body bytes."""

    headers: Mapping[str, str]
    body: bytes = b""

    @property
    def content_type(self) -> str:
        return self.headers.get("Content-Type", "")

    def text(self) -> str:
        # FreeSWITCH writes UTF-8; a broken sequence must not take the link down.
        return self.body.decode("utf-8", errors="replace")


class FrameParser:
    """Cuts a byte stream into `Frame`s by the blank line and `Content-Length` rule."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._headers: dict[str, str] | None = None
        self._need = 0

    def feed(self, data: bytes) -> list[Frame]:
        self._buf += data
        frames: list[Frame] = []
        while True:
            if self._headers is None:
                end = self._buf.find(b"\n\n")
                if end < 0:
                    if len(self._buf) > MAX_HEADER_BLOCK:
                        raise ProtocolError("header block too large")
                    return frames
                block = bytes(self._buf[:end])
                del self._buf[:end + 2]
                if not block.strip(b"\r\n"):
                    continue  # stray blank lines between messages carry nothing
                self._headers = _parse_headers(block)
                self._need = _content_length(self._headers)
            if len(self._buf) < self._need:
                return frames
            body = bytes(self._buf[:self._need])
            del self._buf[:self._need]
            frames.append(Frame(self._headers, body))
            self._headers = None
            self._need = 0


def _parse_headers(block: bytes) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw in block.split(b"\n"):
        line = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ProtocolError(f"header line without a name: {line[:80]!r}")
        headers[name.strip()] = value.strip()
    return headers


def _content_length(headers: Mapping[str, str]) -> int:
    text = headers.get("Content-Length")
    if text is None:
        return 0
    if not text.isdigit():
        raise ProtocolError(f"bad Content-Length {text[:40]!r}")
    size = int(text)
    if size > MAX_BODY:
        raise ProtocolError(f"body of {size} bytes is over the {MAX_BODY} limit")
    return size


# ---------------------------------------------------------------------------------------
# What the session tells its adapter

@dataclass(frozen=True, slots=True)
class Send:
    """Bytes to write to the server."""

    data: bytes


@dataclass(frozen=True, slots=True)
class Authenticated:
    """The server accepted the password: commands flow from now on."""


@dataclass(frozen=True, slots=True)
class AuthFailed:
    """The server refused the password (it will send a disconnect notice and close)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Reply:
    """The answer to a command: `ok` is False for `-ERR`; `body` is an api's output."""

    ok: bool
    text: str
    body: str = ""
    job_uuid: str = ""


@dataclass(frozen=True, slots=True)
class CommandDone:
    """Command `token` was answered (or failed: `reply` None and `error` set)."""

    token: int
    reply: Reply | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Event:
    """A FreeSWITCH event: its name, its headers (all strings) and its raw JSON text."""

    name: str
    headers: Mapping[str, str]
    body: str  # the `_body` member, "" when none
    raw: str  # the JSON text as FreeSWITCH sent it (E_FREESWITCH carries it as `body`)

    @property
    def sequence(self) -> int | None:
        text = self.headers.get("Event-Sequence", "")
        return int(text) if text.isdigit() else None

    @property
    def core_uuid(self) -> str:
        return self.headers.get("Core-UUID", "")


@dataclass(frozen=True, slots=True)
class JobDone:
    """The `BACKGROUND_JOB` of a job this session started: its output (or, with `error`
    set, the job was refused or its result never came within `job_timeout`)."""

    job_uuid: str
    body: str
    error: str = ""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """The load figures of one HEARTBEAT event, received at `at` (the adapter's clock)."""

    session_count: int
    max_sessions: int
    idle_cpu: float
    at: float


@dataclass(frozen=True, slots=True)
class Subscribed:
    """The box answered the link's `event json ...`: from now on it sends them (`ok`
    False: it refused the subscription)."""

    ok: bool


@dataclass(frozen=True, slots=True)
class Closing:
    """The server said goodbye (disconnect notice, rude rejection) or spoke garbage."""

    reason: str


Output = (Send | Authenticated | AuthFailed | CommandDone | Event | JobDone | Heartbeat
          | Subscribed | Closing)


@dataclass(slots=True)
class _Pending:
    token: int
    kind: str  # "api" | "command" | "bgapi" | "subscribe" (the link's own `event json`)
    deadline: float
    job_uuid: str = ""
    abandoned: bool = False  # timed out: its reply is consumed silently


@dataclass(slots=True)
class _Job:
    started: float
    deadline: float


@dataclass
class SessionConfig:
    password: str
    user: str = ""
    events: tuple[str, ...] = ()  # subscribed once authenticated (`event json ...`)
    command_timeout: float = 5.0  # OpenSIPS esl_cmd_timeout
    job_timeout: float = 60.0  # a bgapi result not back by then is given up
    heartbeat_timeout: float = 50.0  # no HEARTBEAT for this long: the link is stale


@dataclass
class EslSession:
    """One inbound connection's protocol state; a new session per TCP connection."""

    config: SessionConfig
    now: float = 0.0  # when the connection was made (heartbeat staleness counts from here)
    state: str = "auth-wait"  # auth-wait -> authenticating -> ready -> closed
    parser: FrameParser = field(default_factory=FrameParser)
    _pending: deque[_Pending] = field(default_factory=deque)
    _queued: list[tuple[_Pending, bytes]] = field(default_factory=list)  # before auth
    _jobs: dict[str, _Job] = field(default_factory=dict)
    _tokens: int = 0
    last_heartbeat: float | None = None
    heartbeat: Heartbeat | None = None

    # -- commands --------------------------------------------------------------------
    def command(self, text: str, now: float, *, kind: str = "command",
                job_uuid: str = "") -> tuple[int, list[Output]]:
        """Queues `text` (`api ...`, `event json ...`, ...); returns its token and what
        to send now (nothing before authentication: it goes out once the server said
        +OK). The answer comes as `CommandDone(token, ...)`."""
        if self.state == "closed":
            raise ConnectionError("the ESL link is closed")
        check_command(text)
        self._tokens += 1
        pending = _Pending(self._tokens, kind, now + self.config.command_timeout, job_uuid)
        wire = text.encode()
        if job_uuid:
            wire += f"\nJob-UUID: {job_uuid}".encode()
        wire += b"\n\n"
        if self.state != "ready":
            self._queued.append((pending, wire))
            return pending.token, []
        self._pending.append(pending)
        return pending.token, [Send(wire)]

    def api(self, command: str, now: float) -> tuple[int, list[Output]]:
        return self.command(f"api {command}", now, kind="api")

    def bgapi(self, command: str, job_uuid: str, now: float) -> tuple[int, list[Output]]:
        """`bgapi command` under the caller's `job_uuid`; the output comes as
        `JobDone(job_uuid, body)` (or `CommandDone` with an error if refused)."""
        self._jobs[job_uuid] = _Job(now, now + self.config.job_timeout)
        return self.command(f"bgapi {command}", now, kind="bgapi", job_uuid=job_uuid)

    def forget_job(self, job_uuid: str) -> None:
        self._jobs.pop(job_uuid, None)

    @property
    def jobs(self) -> dict[str, float]:
        """Jobs waiting for their BACKGROUND_JOB: uuid -> deadline."""
        return {uuid: job.deadline for uuid, job in self._jobs.items()}

    def adopt_jobs(self, jobs: Mapping[str, float], now: float) -> None:
        """Jobs started on a previous connection of the same box, still waiting: their
        BACKGROUND_JOB reaches every subscribed listener, so this one too."""
        for uuid, deadline in jobs.items():
            self._jobs.setdefault(uuid, _Job(now, deadline))

    # -- input -----------------------------------------------------------------------
    def receive(self, data: bytes, now: float) -> list[Output]:
        if self.state == "closed":
            return []
        try:
            frames = self.parser.feed(data)
        except ProtocolError as exc:
            return self._close(f"protocol error: {exc}")
        out: list[Output] = []
        for frame in frames:
            out += self._on_frame(frame, now)
            if self.state == "closed":
                break
        return out

    def _on_frame(self, frame: Frame, now: float) -> list[Output]:
        ctype = frame.content_type
        if ctype == "auth/request":
            return self._on_auth_request()
        if ctype == "command/reply":
            return self._on_reply(Reply(
                ok=frame.headers.get("Reply-Text", "").startswith("+OK"),
                text=frame.headers.get("Reply-Text", ""),
                job_uuid=frame.headers.get("Job-UUID", "")), now)
        if ctype == "api/response":
            body = frame.text()
            return self._on_reply(Reply(ok=not body.startswith("-ERR"), text=body.strip(),
                                        body=body), now)
        if ctype == "text/event-json":
            return self._on_event(frame, now)
        if ctype in ("text/disconnect-notice", "text/rude-rejection"):
            reason = frame.text().strip() or ctype
            if self.state == "authenticating":
                return [AuthFailed(reason), *self._close(reason)]
            return self._close(reason)
        return []  # log/data, text/event-plain we never asked for, ...: nothing to do

    def _on_auth_request(self) -> list[Output]:
        if self.state != "auth-wait":
            return self._close("protocol error: auth/request on an authenticated link")
        self.state = "authenticating"
        if self.config.user:
            return [Send(f"userauth {self.config.user}:{self.config.password}\n\n".encode())]
        return [Send(f"auth {self.config.password}\n\n".encode())]

    def _on_reply(self, reply: Reply, now: float) -> list[Output]:
        if self.state == "authenticating":
            if not reply.ok:
                # FreeSWITCH follows with a disconnect notice and closes: nothing more
                # from this connection matters.
                reason = reply.text or "auth refused"
                return [AuthFailed(reason), *self._close(reason)]
            return self._ready(now)
        if not self._pending:
            return self._close("protocol error: a reply to no command")
        pending = self._pending.popleft()
        if pending.abandoned:
            return []
        if pending.kind == "subscribe":
            return [Subscribed(reply.ok)]
        if pending.kind == "bgapi" and not reply.ok:
            self._jobs.pop(pending.job_uuid, None)  # refused: no BACKGROUND_JOB will come
        return [CommandDone(pending.token, reply)]

    def _ready(self, now: float) -> list[Output]:
        self.state = "ready"
        self.now = now  # heartbeats are due from now on
        out: list[Output] = [Authenticated()]
        if self.config.events:
            self._tokens += 1
            # Subscribed before anything the caller queued: its reply becomes `Subscribed`
            # (a bridge taking over from another waits for it, so no event falls between).
            self._pending.append(_Pending(self._tokens, "subscribe", now + self.config.
                                          command_timeout))
            out.append(Send(f"event json {' '.join(self.config.events)}\n\n".encode()))
        for pending, wire in self._queued:
            self._pending.append(pending)
            out.append(Send(wire))
        self._queued.clear()
        return out

    def _on_event(self, frame: Frame, now: float) -> list[Output]:
        raw = frame.text()
        try:
            doc: Any = json.loads(raw)
        except ValueError:
            return []  # one unreadable event is dropped, the link lives on
        if not isinstance(doc, dict):
            return []
        headers = {str(k): v if isinstance(v, str) else json.dumps(v)
                   for k, v in doc.items() if k != "_body"}
        body = doc.get("_body", "")
        event = Event(headers.get("Event-Name", ""), headers,
                      body if isinstance(body, str) else json.dumps(body), raw)
        out: list[Output] = [event]
        if event.name == "HEARTBEAT":
            beat = parse_heartbeat(headers, now)
            self.last_heartbeat = now
            if beat is not None:
                self.heartbeat = beat
                out.append(beat)
        elif event.name == "BACKGROUND_JOB":
            uuid = headers.get("Job-UUID", "")
            if self._jobs.pop(uuid, None) is not None:
                out.append(JobDone(uuid, event.body))
        return out

    # -- time ------------------------------------------------------------------------
    def expire(self, now: float) -> list[Output]:
        """Commands past their deadline fail (their slot stays, see the docstring);
        jobs past theirs are forgotten and reported with an empty JobDone."""
        out: list[Output] = []
        for pending in self._pending:
            if not pending.abandoned and pending.deadline <= now:
                pending.abandoned = True
                if pending.kind == "bgapi":
                    self._jobs.pop(pending.job_uuid, None)
                out.append(CommandDone(pending.token, None, "ESL command timeout"))
        for pending, _ in self._queued:
            if not pending.abandoned and pending.deadline <= now:
                pending.abandoned = True
                out.append(CommandDone(pending.token, None, "ESL command timeout"))
        self._queued = [(p, w) for p, w in self._queued if not p.abandoned]
        for uuid, job in list(self._jobs.items()):
            if job.deadline <= now:
                del self._jobs[uuid]
                out.append(JobDone(uuid, "", "background job result timeout"))
        return out

    def heartbeat_stale(self, now: float) -> bool:
        """No HEARTBEAT within `heartbeat_timeout` (counted from authentication when
        none came yet). Meaningless before the link is ready."""
        if self.state != "ready":
            return False
        since = self.last_heartbeat if self.last_heartbeat is not None else self.now
        return now - since >= self.config.heartbeat_timeout

    def next_deadline(self) -> float | None:
        times = [p.deadline for p in self._pending if not p.abandoned]
        times += [p.deadline for p, _ in self._queued]
        times += [j.deadline for j in self._jobs.values()]
        if self.state == "ready":
            since = self.last_heartbeat if self.last_heartbeat is not None else self.now
            times.append(since + self.config.heartbeat_timeout)
        return min(times) if times else None

    # -- end -------------------------------------------------------------------------
    def connection_lost(self, reason: str) -> list[Output]:
        """The TCP connection is gone: every command waiting fails now.  Jobs are
        kept (`jobs` / `adopt_jobs`): their result may still come on the next connection,
        since FreeSWITCH sends BACKGROUND_JOB to every subscribed listener."""
        return self._close(reason)

    def _close(self, reason: str) -> list[Output]:
        if self.state == "closed":
            return []
        self.state = "closed"
        out: list[Output] = [Closing(reason)]
        for pending in self._pending:
            if not pending.abandoned:
                out.append(CommandDone(pending.token, None, f"ESL link lost: {reason}"))
        for pending, _ in self._queued:
            out.append(CommandDone(pending.token, None, f"ESL link lost: {reason}"))
        self._pending.clear()
        self._queued.clear()
        return out


def check_command(text: str) -> None:
    """A command must fit one ESL command block (no blank line inside, <= 4 KB)."""
    if not text.strip():
        raise ValueError("empty ESL command")
    if len(text.encode()) > MAX_COMMAND:
        raise ValueError(f"ESL command over {MAX_COMMAND} bytes")
    if "\n\n" in text.replace("\r", "") or text.endswith("\n"):
        raise ValueError("an ESL command cannot hold a blank line")


def parse_heartbeat(headers: Mapping[str, str], now: float) -> Heartbeat | None:
    """The three load figures of a HEARTBEAT (FreeSWITCH switch_core.c send_heartbeat);
    None when one is missing or not a number (the figures are then not trusted)."""
    try:
        sessions = int(headers["Session-Count"])
        maximum = int(headers["Max-Sessions"])
        idle = float(headers["Idle-CPU"])
    except (KeyError, ValueError):
        return None
    if sessions < 0 or maximum < 0 or not 0.0 <= idle <= 100.0:
        return None
    return Heartbeat(sessions, maximum, idle, now)
