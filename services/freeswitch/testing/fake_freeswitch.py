"""A fake FreeSWITCH Event Socket server (inbound mode), written from the Event Socket
documentation (mod_event_socket) because FreeSWITCH cannot be installed on this machine.

What it does, as FreeSWITCH documents and does it:

* on connect it sends `Content-Type: auth/request`; `auth <password>` (or
  `userauth <user>:<password>`) gets `command/reply` `+OK accepted`, a wrong one
  `-ERR invalid` then a `text/disconnect-notice` and the connection is closed; any other
  command before that gets `-ERR command not found`;
* `event json|plain <names>` (`ALL` for everything; `CUSTOM <subclass>`) answers
  `+OK event listener enabled json`; `nixevent <names>` `+OK events nixed`;
  `noevents` `+OK no longer listening for events`; `exit` `+OK bye` then a disconnect
  notice and close;
* `api <cmd>` answers `api/response` with the output as a `Content-Length` body, for
  `status`, `show calls` (`show calls as json` too), `uuid_kill <uuid>`, `version`,
  `echo <text>`, `hostname` and `global_getvar`; an unknown command
  `-ERR <cmd> Command not found!`;
* `bgapi <cmd>` (an optional `Job-UUID:` line is honoured) answers at once
  `+OK Job-UUID: <uuid>` with a `Job-UUID` header; after `bgapi_delay` a
  `BACKGROUND_JOB` event (`Job-UUID`, `Job-Command`, `Job-Command-Arg`, body = output) goes
  to **every** listener subscribed to it, as FreeSWITCH fires it to all;
* events carry `Event-Name`, `Core-UUID` (one per fake "process"), `FreeSWITCH-Hostname`,
  `FreeSWITCH-IPv4`, `Event-Date-Timestamp` and a global `Event-Sequence`, JSON-encoded
  (`text/event-json`, headers as strings, `_body` for a body) or plain (`text/event-plain`,
  URL-encoded values);
* `HEARTBEAT` every `heartbeat_interval` with `Session-Count`, `Max-Sessions`,
  `Idle-CPU` ("78.400000") and `Up-Time`, `Session-Per-Sec`... from the scriptable `load`.

Faults a test can switch on: `drop_connections()` (every connection closed at once),
`restart_process()` (dropped, and a new Core-UUID with event numbering from 1),
`api_delay` (api answers late, holding up the replies after them, as FreeSWITCH serves
one connection's commands in order), `duplicate_events` (each event written twice),
`stop_listening()` / `start_listening()` (connections refused, same port), `stall()` /
`unstall()` (nothing written to current connections, then the backlog flushed, as a
half-dead link), `split_writes` (each message written a few bytes at a time, so frames
and multi-byte UTF-8 characters arrive split), `heartbeats = False`, and non-ASCII text
anywhere (`hostname`, event headers and bodies, `echo`).

Run one by hand (`make run` users can point `[freeswitch] boxes` at it):

    python -m services.freeswitch.testing.fake_freeswitch --port 8021 --password ClueCon \\
        --sessions 10 --max-sessions 100 --idle-cpu 90 --heartbeat 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

T = TypeVar("T")

GOODBYE = "Disconnected, goodbye.\nSee you at ClueCon! http://www.cluecon.com/\n"


@dataclass
class Load:
    """What HEARTBEAT reports (FreeSWITCH's switch_core.c send_heartbeat)."""

    session_count: int = 0
    max_sessions: int = 1000
    idle_cpu: float = 98.0
    session_per_sec: int = 0


@dataclass
class Call:
    uuid: str
    direction: str = "inbound"
    cid_num: str = "1000"
    dest: str = "9386"


@dataclass
class _Listener:
    """One client connection."""

    writer: asyncio.StreamWriter
    authed: bool = False
    fmt: str = "json"
    events: set[str] = field(default_factory=set)
    all_events: bool = False
    stalled: bool = False
    backlog: list[bytes] = field(default_factory=list)
    trickle: asyncio.Lock = field(default_factory=asyncio.Lock)  # split writes keep order

    def wants(self, name: str, subclass: str = "") -> bool:
        if not self.authed:
            return False
        if self.all_events:
            return True
        if name == "CUSTOM" and subclass:
            return f"CUSTOM {subclass}" in self.events or "CUSTOM" in self.events
        return name in self.events


class FakeFreeswitch:
    """The fake server; `await start()`, `await stop()` (see the module docstring)."""

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, password: str = "ClueCon",
                 user: str = "", load: Load | None = None, heartbeat_interval: float = 1.0,
                 bgapi_delay: float = 0.05, hostname: str = "fake-fs",
                 sip_uri: str = "") -> None:
        self.host = host
        self.port = port
        self.password = password
        self.user = user
        self.load = load or Load()
        self.heartbeat_interval = heartbeat_interval
        self.bgapi_delay = bgapi_delay
        self.hostname = hostname
        self.sip_uri = sip_uri
        self.core_uuid = str(uuid.uuid4())
        self.calls: dict[str, Call] = {}
        self.heartbeats = True
        self.split_writes = False
        self.api_delay = 0.0  # a slow api command holds up the connection's later replies
        self.duplicate_events = False  # every event written twice (a relay gone wrong)
        self.listeners: list[_Listener] = []
        self.commands: list[str] = []  # every command received (authenticated or not)
        self.auth_times: list[float] = []  # time.monotonic() of each successful auth
        self.history: deque[dict[str, str]] = deque(maxlen=1000)  # events fired, latest last
        self.auth_failures = 0
        self.auth_failure_times: list[float] = []
        self.connections = 0
        self.started = time.time()
        self._sequence = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._beat: asyncio.Task[None] | None = None

    # -- lifecycle ---------------------------------------------------------------------
    async def start(self) -> FakeFreeswitch:
        await self.start_listening()
        self._beat = asyncio.get_running_loop().create_task(self._heartbeat_loop())
        return self

    async def start_listening(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                      reuse_address=True)
            self.port = self._server.sockets[0].getsockname()[1]

    async def stop_listening(self) -> None:
        """New connections are refused (the port stays ours to listen on again)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def stop(self) -> None:
        if self._beat is not None:
            self._beat.cancel()
        await self.stop_listening()
        self.drop_connections()
        for task in list(self._tasks):
            task.cancel()

    def restart_process(self) -> None:
        """As if FreeSWITCH restarted: connections dropped, a new Core-UUID and event
        numbering (a client must not take the new numbers for duplicates)."""
        self.drop_connections()
        self.core_uuid = str(uuid.uuid4())
        self._sequence = 0
        self.started = time.time()

    @property
    def url(self) -> str:
        query = f"?sip={self.sip_uri}" if self.sip_uri else ""
        auth = f"{self.user}:{self.password}"
        return f"fs://{auth}@{self.host}:{self.port}{query}"

    @property
    def authed_listeners(self) -> list[_Listener]:
        return [li for li in self.listeners if li.authed]

    # -- faults ------------------------------------------------------------------------
    def drop_connections(self) -> None:
        for li in list(self.listeners):
            li.writer.transport.abort()
        self.listeners.clear()

    def stall(self) -> None:
        for li in self.listeners:
            li.stalled = True

    def unstall(self) -> None:
        for li in self.listeners:
            li.stalled = False
            for data in li.backlog:
                self._write_now(li, data)
            li.backlog.clear()

    # -- events ------------------------------------------------------------------------
    def fire(self, name: str, headers: Mapping[str, str] | None = None, body: str = "",
             *, subclass: str = "") -> int:
        """Sends event `name` to every listener subscribed to it; its Event-Sequence."""
        self._sequence += 1
        now = time.time()
        event: dict[str, str] = {
            "Event-Name": name,
            "Core-UUID": self.core_uuid,
            "FreeSWITCH-Hostname": self.hostname,
            "FreeSWITCH-Switchname": self.hostname,
            "FreeSWITCH-IPv4": self.host,
            "Event-Date-Timestamp": str(int(now * 1_000_000)),
            "Event-Date-GMT": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now)),
            "Event-Calling-File": "fake_freeswitch.py",
            "Event-Sequence": str(self._sequence),
        }
        if subclass:
            event["Event-Subclass"] = subclass
        event.update(headers or {})
        self.history.append(event)
        for li in list(self.listeners):
            if li.wants(name, subclass):
                data = _event_frame(event, body, li.fmt)
                self._write(li, data)
                if self.duplicate_events:
                    self._write(li, data)
        return self._sequence

    def heartbeat(self) -> int:
        load = self.load
        up = time.time() - self.started
        return self.fire("HEARTBEAT", {
            "Event-Info": "System Ready",
            "Up-Time": _uptime(up),
            "Uptime-msec": str(int(up * 1000)),
            "FreeSWITCH-Version": "1.10.12-release~64bit",
            "Session-Count": str(load.session_count),
            "Max-Sessions": str(load.max_sessions),
            "Session-Per-Sec": str(load.session_per_sec),
            "Session-Per-Sec-Last": str(load.session_per_sec),
            "Session-Per-Sec-Max": "30",
            "Session-Per-Sec-FiveMin": "0",
            "Session-Since-Startup": str(load.session_count),
            "Session-Peak-Max": str(load.session_count),
            "Session-Peak-FiveMin": str(load.session_count),
            "Idle-CPU": f"{load.idle_cpu:.6f}",
        })

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval)
            if self.heartbeats:
                self.heartbeat()

    # -- connections -------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        li = _Listener(writer)
        self.listeners.append(li)
        self._write(li, _frame({"Content-Type": "auth/request"}))
        try:
            while True:
                block = await reader.readuntil(b"\n\n")
                text = block.decode("utf-8", errors="replace").replace("\r", "").strip("\n")
                if not text:
                    continue
                lines = text.split("\n")
                extra = dict(_header(line) for line in lines[1:] if ":" in line)
                if not await self._command(li, lines[0].strip(), extra):
                    break
        except (asyncio.IncompleteReadError, ConnectionError, asyncio.LimitOverrunError):
            pass
        finally:
            if li in self.listeners:
                self.listeners.remove(li)
            writer.close()

    async def _command(self, li: _Listener, cmd: str, extra: Mapping[str, str]) -> bool:
        """Answers one command; False when the connection is to be closed."""
        self.commands.append(cmd)
        verb, _, rest = cmd.partition(" ")
        if not li.authed:
            if verb in ("auth", "userauth"):
                good = rest == self.password if verb == "auth" else \
                    rest == f"{self.user}:{self.password}"
                if good:
                    li.authed = True
                    self.auth_times.append(time.monotonic())
                    self._reply(li, "+OK accepted")
                    return True
                self.auth_failures += 1
                self.auth_failure_times.append(time.monotonic())
                self._reply(li, "-ERR invalid")
                self._disconnect(li)
                return False
            self._reply(li, "-ERR command not found")
            return True
        if verb == "event":
            fmt, _, names = rest.partition(" ")
            if fmt not in ("json", "plain"):
                self._reply(li, "-ERR invalid event format")
                return True
            li.fmt = fmt
            self._subscribe(li, names)
            self._reply(li, f"+OK event listener enabled {fmt}")
        elif verb == "nixevent":
            for name in _names(rest):
                li.events.discard(name)
                if name == "ALL":
                    li.all_events = False
            self._reply(li, "+OK events nixed")
        elif verb == "noevents":
            li.events.clear()
            li.all_events = False
            self._reply(li, "+OK no longer listening for events")
        elif verb == "api":
            if self.api_delay:
                # FreeSWITCH runs one connection's commands one after the other: a slow
                # api holds up the replies to the commands sent after it.
                await asyncio.sleep(self.api_delay)
            self._write(li, _frame({"Content-Type": "api/response"}, self.api(rest)))
        elif verb == "bgapi":
            job = extra.get("Job-UUID") or str(uuid.uuid4())
            self._reply(li, f"+OK Job-UUID: {job}", {"Job-UUID": job})
            task = asyncio.get_running_loop().create_task(self._job(job, rest))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif verb == "exit":
            self._reply(li, "+OK bye")
            self._disconnect(li)
            return False
        else:
            self._reply(li, "-ERR command not found")
        return True

    def _subscribe(self, li: _Listener, names: str) -> None:
        words = names.split()
        while words:
            word = words.pop(0)
            if word == "ALL":
                li.all_events = True
            elif word == "CUSTOM" and words and "::" in words[0]:
                li.events.add(f"CUSTOM {words.pop(0)}")
            else:
                li.events.add(word)

    async def _job(self, job: str, command: str) -> None:
        await asyncio.sleep(self.bgapi_delay)
        name, _, arg = command.partition(" ")
        self.fire("BACKGROUND_JOB", {"Job-UUID": job, "Job-Command": name,
                                     "Job-Command-Arg": arg}, self.api(command))

    # -- api commands --------------------------------------------------------------------
    def api(self, command: str) -> str:
        name, _, arg = command.strip().partition(" ")
        arg = arg.strip()
        if name == "status":
            return self._status()
        if name == "show" and arg.startswith("calls"):
            return self._show_calls(as_json=arg.endswith("as json"))
        if name == "uuid_kill":
            call_uuid = arg.split()[0] if arg else ""
            if self.calls.pop(call_uuid, None) is None:
                return "-ERR No such channel!\n"
            self.load.session_count = max(0, self.load.session_count - 1)
            self.fire("CHANNEL_HANGUP", {"Unique-ID": call_uuid,
                                         "Hangup-Cause": "NORMAL_CLEARING"})
            return "+OK\n"
        if name == "version":
            return "FreeSWITCH Version 1.10.12-release~64bit (fake)\n"
        if name == "echo":
            return arg
        if name == "hostname":
            return self.hostname
        if name == "global_getvar":
            return {"hostname": self.hostname, "local_ip_v4": self.host}.get(arg, "")
        return f"-ERR {name} Command not found!\n"

    def _status(self) -> str:
        load = self.load
        return (
            f"UP {_uptime(time.time() - self.started)}\n"
            "FreeSWITCH (Version 1.10.12 -release 64bit) is ready\n"
            f"{load.session_count} session(s) since startup\n"
            f"{load.session_count} session(s) - peak {load.session_count}, last 5min "
            f"{load.session_count} \n"
            f"{load.session_per_sec} session(s) per Sec out of max 30, peak 0, last 5min 0 \n"
            f"{load.max_sessions} session(s) max\n"
            f"min idle cpu 0.00/{load.idle_cpu:.2f}\n"
            "Current Stack Size/Max 240K/8192K\n")

    def _show_calls(self, *, as_json: bool) -> str:
        rows = [{"uuid": c.uuid, "direction": c.direction, "cid_num": c.cid_num,
                 "dest": c.dest} for c in self.calls.values()]
        if as_json:
            doc: dict[str, Any] = {"row_count": len(rows)}
            if rows:
                doc["rows"] = rows
            return json.dumps(doc)
        lines = ["uuid,direction,cid_num,dest"]
        lines += [",".join(r.values()) for r in rows]
        return "\n".join(lines) + f"\n\n{len(rows)} total.\n"

    def add_call(self, *, cid_num: str = "1000", dest: str = "9386") -> str:
        call = Call(str(uuid.uuid4()), cid_num=cid_num, dest=dest)
        self.calls[call.uuid] = call
        self.load.session_count += 1
        self.fire("CHANNEL_CREATE", {"Unique-ID": call.uuid,
                                     "Caller-Caller-ID-Number": cid_num,
                                     "Caller-Destination-Number": dest})
        return call.uuid

    # -- writing ---------------------------------------------------------------------------
    def _reply(self, li: _Listener, text: str, extra: Mapping[str, str] | None = None) -> None:
        self._write(li, _frame({"Content-Type": "command/reply", "Reply-Text": text,
                                **(extra or {})}))

    def _disconnect(self, li: _Listener) -> None:
        self._write(li, _frame({"Content-Type": "text/disconnect-notice"}, GOODBYE))
        with contextlib.suppress(Exception):
            li.writer.write_eof()

    def _write(self, li: _Listener, data: bytes) -> None:
        if li.stalled:
            li.backlog.append(data)
            return
        self._write_now(li, data)

    def _write_now(self, li: _Listener, data: bytes) -> None:
        if li.writer.is_closing():
            return
        if not self.split_writes:
            li.writer.write(data)
            return
        task = asyncio.get_running_loop().create_task(self._trickle(li, data))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _trickle(self, li: _Listener, data: bytes) -> None:
        # 3 bytes at a time, each a write of its own: frames and UTF-8 sequences arrive
        # cut at every possible place.  One trickle at a time per connection keeps order.
        async with li.trickle:
            for i in range(0, len(data), 3):
                if li.writer.is_closing():
                    return
                li.writer.write(data[i:i + 3])
                await li.writer.drain()
                await asyncio.sleep(0)


def _frame(headers: Mapping[str, str], body: str = "") -> bytes:
    payload = body.encode()
    lines = [f"{k}: {v}" for k, v in headers.items()]
    if payload:
        lines.append(f"Content-Length: {len(payload)}")
    return ("\n".join(lines) + "\n\n").encode() + payload


def _event_frame(event: Mapping[str, str], body: str, fmt: str) -> bytes:
    if fmt == "plain":
        lines = [f"{k}: {quote(v, safe='')}" for k, v in event.items()]
        payload = body.encode()
        if payload:
            lines.append(f"Content-Length: {len(payload)}")
        text = ("\n".join(lines) + "\n\n").encode() + payload
        return _frame({"Content-Type": "text/event-plain"}, text.decode())
    doc = dict(event)
    if body:
        doc["Content-Length"] = str(len(body.encode()))
        doc["_body"] = body
    return _frame({"Content-Type": "text/event-json"}, json.dumps(doc, ensure_ascii=False))


def _header(line: str) -> tuple[str, str]:
    name, _, value = line.partition(":")
    return name.strip(), value.strip()


def _names(text: str) -> list[str]:
    return text.split()


def _uptime(seconds: float) -> str:
    s = int(seconds)
    ms = int((seconds - s) * 1000)
    return (f"0 years, {s // 86400} days, {s // 3600 % 24} hours, {s // 60 % 60} minutes, "
            f"{s % 60} seconds, {ms} milliseconds, 0 microseconds")


# ------------------------------------------------------------------------------------------
# Running fakes on a thread of their own (for tests whose own code blocks: subprocesses,
# opensips-cli, sipp): every control call is marshalled onto the fakes' loop.

class FakeThread:
    """An event loop on a daemon thread hosting fakes; `call(fn)` runs there."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True,
                                        name="fake-freeswitch")
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result(timeout)

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        async def run() -> T:
            return fn(*args)

        return self.run(run())

    def start_fake(self, **kwargs: Any) -> FakeFreeswitch:
        return self.run(FakeFreeswitch(**kwargs).start())

    def close(self, fakes: Sequence[FakeFreeswitch] = ()) -> None:
        for fake in fakes:
            with contextlib.suppress(Exception):
                self.run(fake.stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="a fake FreeSWITCH Event Socket (tests, demos)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8021)
    p.add_argument("--password", default="ClueCon")
    p.add_argument("--sessions", type=int, default=0)
    p.add_argument("--max-sessions", type=int, default=1000)
    p.add_argument("--idle-cpu", type=float, default=98.0)
    p.add_argument("--heartbeat", type=float, default=1.0, help="HEARTBEAT interval (s)")
    args = p.parse_args(argv)

    async def run() -> None:
        fake = await FakeFreeswitch(
            host=args.host, port=args.port, password=args.password,
            load=Load(args.sessions, args.max_sessions, args.idle_cpu),
            heartbeat_interval=args.heartbeat).start()
        print(f"fake freeswitch listening {fake.host}:{fake.port}", flush=True)
        await asyncio.Event().wait()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
