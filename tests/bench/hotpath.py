"""The edge's hot paths in one process, for instruction counts and profiles (not a test).

Two workloads, each the messages sipp sends and answers in `make bench`, fed to the real
sans-IO cores with no sockets, so that a count of instructions (callgrind) or a profile
says what the Python code costs, whatever else the shared machine is doing:

- `invite`: one stateful call through the edge's ProxyCore with the default routing
  (trusted caller, record-route, zero hold time), as sipp's built-in `uac`/`uas`
  scenarios play it: INVITE, 100, 180, 200, ACK, BYE, 200, and the transaction timers
  that end it (Timer K/J/D/H run by the clock as time advances).
- `register`: REGISTER with digest as tests/bench/registrar/register_load.xml plays it:
  REGISTER, 401 (stateless challenge), REGISTER with qop=auth credentials, then the
  registrar's Save on the request's bytes (parse, usrloc save of a new binding, answer
  headers) and the edge's 200.  The gRPC hop between them is not here: its cost is what
  `bench_registrar.py cpu` measures on the real processes.

    .venv/bin/python tests/bench/hotpath.py invite|register [--calls N] [--profile]
    .venv/bin/python tests/bench/hotpath.py invite|register --callgrind [--calls N]
    .venv/bin/python tests/bench/hotpath.py invite --retained [--calls N]
    (register --edge-check: the digest checked at the edge, as before SaveWithDigest)

`--callgrind` runs this script twice under `valgrind --tool=callgrind` (a warm-up only,
then warm-up + N calls) and prints the difference per call: instructions, repeatable to a
few parts per thousand on a loaded machine, and calls to CPython's object allocator
(objects and buffers created).  `--retained` says what live transactions keep.
`--profile` prints cProfile's top frames by own time with their share of the total.
`invite --worker` hands the routing the (unconfigured) service clients of a real worker,
which the default routing asks for every request.  Each
figure says which SIP core ran: compiled (`make compiled`) or pure Python
(`SIPMESH_COMPILED=off` to compare, shared/compiled.py).
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import ipaddress
import pstats
import re
import subprocess
import sys
import tempfile
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.edge.addresses import Interface, Source  # noqa: E402
from services.edge.auth import ProxyAuthenticator  # noqa: E402
from services.edge.core import Await, ProxyCore, Send  # noqa: E402
from services.edge.registrar_client import Credentials  # noqa: E402
from services.edge.routing import RouterSetup, load_router  # noqa: E402
from shared import compiled  # noqa: E402
from shared.transaction import TimerSettings  # noqa: E402

EDGE = Interface("udp", "127.0.0.1", 5060)
UAC = ("127.0.0.1", 5091)
UAS = ("127.0.0.1", 5090)
SDP = ("v=0\r\no=user1 53655765 2353687637 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\n"
       "t=0 0\r\nm=audio 6000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")


def _lines(data: bytes, name: bytes, as_name: bytes | None = None) -> str:
    """Header lines `name` of a message the edge sent, renamed `as_name` (the test side's
    work kept small: no parse of its own to count with the edge's)."""
    prefix = name + b": "
    out = as_name + b": " if as_name else prefix
    head = data[:data.find(b"\r\n\r\n")]
    return "".join((out + line[len(prefix):]).decode() + "\r\n"
                   for line in head.split(b"\r\n") if line.startswith(prefix))


def _sends(outs: list[Any]) -> list[Send]:
    for o in outs:
        if isinstance(o, Await):
            raise RuntimeError("unexpected Await on the INVITE path")
    return [o for o in outs if isinstance(o, Send)]


def _worker_services() -> tuple[dict[str, Any], Any]:
    """The service clients and dialog tracker an edge worker's routing sees (`serve` in
    services/edge/app.py), none of them configured: the standalone worker `make bench`
    runs, whose default routing asks each of them per request. Built, never started (no
    loop); the discovery watchers are marked as running, as they are in that worker."""
    from services.edge.dialog_client import DialogClient
    from services.edge.dialog_tracking import DialogTracker
    from services.edge.media_client import MediaClient
    from services.edge.presence_client import PresenceClient
    from services.edge.recording import RecordingClient
    from services.edge.registrar_client import RegistrarClient
    from shared.discovery.memory import MemoryRegistry

    registry = MemoryRegistry()
    registrar = RegistrarClient(registry=registry, expected=False)
    media = MediaClient(registry=registry)
    presence = PresenceClient(registry=registry)
    dialogs = DialogClient(registry=registry)
    siprec = RecordingClient(registry=registry)
    for client in (registrar, media, presence, dialogs, siprec):
        if hasattr(client, "_watcher"):
            client._watcher = object()
    services: dict[str, Any] = {"registrar": registrar, "media": media, "dialog": dialogs,
                                "siprec": siprec, "presence": presence, "freeswitch": None}
    # Tracking enabled, as `[edge] dialog_tracking` defaults and `make bench` runs it; no
    # dialog service known (the eighth round built it disabled: not the bench's worker).
    return services, DialogTracker(dialogs, enabled=True)


class _Sent:
    """A datagram the app's glue sent (what `_feed` reads of a core's `Send`)."""

    def __init__(self, data: bytes, port: int) -> None:
        self.data = data
        self.dest = types.SimpleNamespace(port=port)


class _Loop:
    """What `EdgeApp` asks of its loop on the datagram path: the clock and the timer."""

    def __init__(self, flow: InviteCall) -> None:
        self.flow = flow

    def time(self) -> float:
        return self.flow.now

    def call_at(self, when: float, callback: Callable[[], None]) -> Any:
        return types.SimpleNamespace(cancel=lambda: None)


class _Socket:
    """The datagram transport: keeps what the glue sends."""

    def __init__(self) -> None:
        self.sent: list[_Sent] = []

    def sendto(self, data: bytes, addr: tuple[str, int]) -> None:
        self.sent.append(_Sent(data, addr[1]))


class InviteCall:
    """sipp uac -> edge -> sipp uas, every message as sipp writes it."""

    def __init__(self, paced: int = 0, worker: bool = False, app: bool = False) -> None:
        services, tracker = _worker_services() if worker else ({}, None)
        router = load_router("services.edge.default_routing",
                             RouterSetup(frozenset(), {}, services))
        self.core = ProxyCore([EDGE], router, settings=TimerSettings(),
                              trusted=[ipaddress.ip_network("127.0.0.0/8")],
                              services=services, tracker=tracker)
        self.now = 0.0
        self.n = 0
        self.last = b""
        self.tick = True  # timers fire every 100 calls (False: transactions pile up)
        # `paced`: calls/s of the clock, the timers driven as the worker drives them
        # (next_deadline after every message, handle_timer at each 10 ms tick), so the
        # transactions' timers of the last 32 s are all armed, as in a real worker.
        self.paced = paced
        self._tick = 0
        # `app`: each datagram through a real EdgeApp's UDP glue (the endpoint's
        # `datagram_received`, the app's receive, send and timer re-arming code), its loop
        # and socket stand-ins in process: what a worker runs per datagram besides uvloop.
        self.receive: Callable[[bytes, tuple[str, int]], None] | None = None
        if app:
            from services.edge.app import EdgeApp
            from services.edge.config import EdgeConfig
            from services.edge.transports import UdpEndpoint

            edge = EdgeApp(EdgeConfig(listen=("udp:127.0.0.1:5060",), rr_secret="k" * 32))
            edge.core = self.core
            edge._loop = _Loop(self)  # type: ignore[assignment]
            endpoint = UdpEndpoint(EDGE, edge._on_message, edge._warn)
            self.socket = _Socket()
            endpoint.connection_made(self.socket)  # type: ignore[arg-type]
            edge.udp[EDGE] = endpoint
            self.app = edge
            self.receive = endpoint.datagram_received

    def _feed(self, data: str, peer: tuple[str, int]) -> list[Any]:
        out: list[Any]
        if self.receive is not None:
            out = self.socket.sent = []
            self.receive(data.encode(), peer)
        else:
            out = _sends(self.core.receive(data.encode(), Source(EDGE, *peer), self.now))
        if self.paced:
            self.core.next_deadline()  # the worker's _rearm, after every message
        for s in out:
            if s.dest.port == UAS[1]:
                self.last = s.data  # what the UAS got last
        return out

    def _timers(self) -> None:
        core = self.core
        while (deadline := core.next_deadline()) is not None and deadline <= self.now:
            core.handle_timer(deadline)

    def call(self) -> None:
        self.n += 1
        n = self.n
        cid = f"{n}-4242@127.0.0.1"
        via = f"SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-4242-{n}-0"
        frm = f"sipp <sip:sipp@127.0.0.1:5091>;tag=4242SIPpTag00{n}"
        to = "<sip:service@127.0.0.1:5090>"
        invite = (f"INVITE sip:service@127.0.0.1:5090 SIP/2.0\r\nVia: {via}\r\n"
                  f"From: {frm}\r\nTo: {to}\r\nCall-ID: {cid}\r\nCSeq: 1 INVITE\r\n"
                  f"Contact: sip:sipp@127.0.0.1:5091\r\nMax-Forwards: 70\r\n"
                  f"Subject: Performance Test\r\nContent-Type: application/sdp\r\n"
                  f"Content-Length: {len(SDP)}\r\n\r\n{SDP}")
        out = self._feed(invite, UAC)
        fwd = next(s for s in out if s.dest.port == UAS[1])
        vias = _lines(fwd.data, b"Via")
        rr = _lines(fwd.data, b"Record-Route")
        head = f"{vias}From: {frm}\r\nTo: {to};tag={n}SIPpTag01{n}\r\nCall-ID: {cid}\r\n"
        self._feed(f"SIP/2.0 180 Ringing\r\n{head}{rr}CSeq: 1 INVITE\r\n"
                   f"Contact: <sip:127.0.0.1:5090;transport=UDP>\r\nContent-Length: 0\r\n\r\n",
                   UAS)
        ok = self._feed(f"SIP/2.0 200 OK\r\n{head}{rr}CSeq: 1 INVITE\r\n"
                        f"Contact: <sip:127.0.0.1:5090;transport=UDP>\r\n"
                        f"Content-Type: application/sdp\r\nContent-Length: {len(SDP)}\r\n\r\n"
                        f"{SDP}", UAS)
        assert ok[0].data.startswith(b"SIP/2.0 200 "), ok
        routes = _lines(ok[0].data, b"Record-Route", b"Route")
        to_tagged = f"{to};tag={n}SIPpTag01{n}"
        for method, cseq, branch in (("ACK", 1, 1), ("BYE", 2, 2)):
            self._feed(f"{method} sip:127.0.0.1:5090;transport=UDP SIP/2.0\r\n"
                       f"Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bK-4242-{n}-{branch}\r\n"
                       f"{routes}From: {frm}\r\nTo: {to_tagged}\r\nCall-ID: {cid}\r\n"
                       f"CSeq: {cseq} {method}\r\nContact: sip:sipp@127.0.0.1:5091\r\n"
                       f"Max-Forwards: 70\r\nSubject: Performance Test\r\n"
                       f"Content-Length: 0\r\n\r\n", UAC)
        assert self.last.startswith(b"BYE ")
        bvias = _lines(self.last, b"Via")
        done = self._feed(f"SIP/2.0 200 OK\r\n{bvias}From: {frm}\r\nTo: {to_tagged}\r\n"
                          f"Call-ID: {cid}\r\nCSeq: 2 BYE\r\nContact: <sip:127.0.0.1:5090;"
                          f"transport=UDP>\r\nContent-Length: 0\r\n\r\n", UAS)
        assert done and done[0].dest.port == UAC[1]
        if self.paced:
            self.now += 1 / self.paced
            tick = int(self.now / 0.01)
            if tick != self._tick:  # the worker's loop timer, once per 10 ms tick
                self._tick = tick
                deadline = self.core.next_deadline()
                if deadline is not None and deadline <= self.now:
                    self.core.handle_timer(self.now)
            return
        self.now += 0.001
        if self.tick and n % 100 == 0:  # a second or so of wall clock at ~100 calls/s: timers fire
            self.now += 40.0
            self._timers()

    def finish(self) -> None:
        self.now += 100.0
        self._timers()
        assert self.core.transactions == 0, self.core.transactions


class FakeRegistrar:
    """The registrar service the default routing calls, its Save done in this process by
    the registrar's own sans-IO code on the request's bytes (what the gRPC servicer runs)."""

    available = True
    expected = True
    register_auth = True
    algorithms = ("MD5",)

    def __init__(self, users: int, digest_on_save: bool = True) -> None:
        from services.registrar.location import Location
        from services.registrar.subscribers import Subscriber, ha1_hashes

        self.location = Location()
        self.creds = {f"user{i}": Credentials(*ha1_hashes(f"user{i}", "127.0.0.1", f"pw{i}"))
                      for i in range(users)}
        self.subscribers = {(user, "127.0.0.1"): Subscriber(user, "127.0.0.1", c.ha1,
                                                            c.ha1_sha256)
                            for user, c in self.creds.items()}
        self.now = 1_000_000.0
        # True: the registrar checks the digest on Save (SaveWithDigest, the default);
        # False: the edge checks it with the HA1 of `credentials` (`--edge-check`).
        self.digest_on_save = digest_on_save

    async def save_with_digest(self, message: bytes, host: str, port: int, transport: str,
                               socket: str, creds: Any
                               ) -> tuple[int, str, list[tuple[str, str]], bool]:
        """What RegistrarClient.save_with_digest sends and the servicer does with it, but
        the gRPC transport and the SQLite lookup (a dict here)."""
        from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
        from services.registrar import digest
        from services.registrar.app import _parse_save
        from services.registrar.location import SaveResult

        request = pb.SaveRequest(
            message=message, source_host=host, source_port=port, transport=transport,
            socket=socket, digest=pb.Digest(
                username=creds.username, realm=creds.realm, nonce=creds.nonce,
                uri=creds.uri, response=creds.response, algorithm=creds.algorithm,
                qop=creds.qop or "", nc=creds.nc or "", cnonce=creds.cnonce or ""))
        parsed = _parse_save(request)
        if isinstance(parsed, SaveResult):
            return parsed.status, parsed.reason, list(parsed.headers), False
        msg, origin = parsed
        checked = digest.credentials_of(request.digest)
        key = digest.lookup_key(msg, checked)
        verdict = digest.check(msg, checked, None if key is None else
                               self.subscribers.get(key))
        if verdict != "ok":
            return 401, "Unauthorized", [], True
        result = self.location.save(msg, origin, self.now)
        return result.status, result.reason, list(result.headers), False

    async def credentials(self, username: str, domain: str, *, fresh: bool = False
                          ) -> Credentials | None:
        return self.creds.get(username)

    async def save(self, message: bytes, host: str, port: int, transport: str,
                   socket: str) -> tuple[int, str, list[tuple[str, str]]]:
        from services.registrar.app import _parse_save
        from services.registrar.location import SaveResult

        parsed = _parse_save(types.SimpleNamespace(
            message=message, source_host=host, source_port=port, transport=transport,
            socket=socket))
        result = parsed if isinstance(parsed, SaveResult) else \
            self.location.save(*parsed, self.now)
        return result.status, result.reason, list(result.headers)


class RegisterFlow:
    def __init__(self, users: int = 1000, digest_on_save: bool = True) -> None:
        import time

        router = load_router("services.edge.default_routing",
                             RouterSetup(frozenset({"127.0.0.1"}), {}))
        self.registrar = FakeRegistrar(users, digest_on_save)
        auth = ProxyAuthenticator("127.0.0.1", {}, b"bench-secret", time.time)
        self.core = ProxyCore([EDGE], router, settings=TimerSettings(),
                              local_domains=("127.0.0.1",),
                              services={"registrar": self.registrar, "auth": auth},
                              trusted=[], auth=auth)
        self.users = users
        self.n = 0
        self.now = 0.0

    def _run(self, outs: list[Any]) -> list[Send]:
        sends = [o for o in outs if isinstance(o, Send)]
        for o in outs:
            if isinstance(o, Await):
                coro = o.awaitable
                try:
                    coro.send(None)  # type: ignore[attr-defined]
                except StopIteration:
                    pass
                else:
                    raise RuntimeError("the registrar hook suspended")
                sends += self._run(o.resume(self.now))
        return sends

    def register(self) -> None:
        self.n += 1
        n = self.n
        user = f"user{n % self.users}"
        port = 5100 + n % 1000
        src = Source(EDGE, "127.0.0.1", port)
        head = (f"From: <sip:{user}@127.0.0.1>;tag=4242SIPpTag00{n}\r\n"
                f"To: <sip:{user}@127.0.0.1>\r\nCall-ID: {n}-4242@127.0.0.1\r\n")
        tail = ("Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
        contact = f"Contact: <sip:{user}@127.0.0.1:{port}>\r\n"
        first = (f"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
                 f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-4242-{n}-0\r\n"
                 f"{head}CSeq: 1 REGISTER\r\n{contact}{tail}")
        out = self._run(self.core.receive(first.encode(), src, self.now))
        assert out[0].data.startswith(b"SIP/2.0 401 "), out
        nonce = re.search(rb'nonce="([^"]+)"', out[0].data)
        assert nonce is not None
        cnonce = f"{n:08x}"
        ha1 = self.registrar.creds[user].ha1
        ha2 = hashlib.md5(b"REGISTER:sip:127.0.0.1:5060").hexdigest()
        response = hashlib.md5(f"{ha1}:{nonce.group(1).decode()}:00000001:{cnonce}:auth:"
                               f"{ha2}".encode()).hexdigest()
        creds = (f'Digest username="{user}",realm="127.0.0.1",'
                 f'uri="sip:127.0.0.1:5060",nonce="{nonce.group(1).decode()}",'
                 f'response="{response}",algorithm=MD5,cnonce="{cnonce}",qop=auth,'
                 f'nc=00000001')
        second = (f"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
                  f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-4242-{n}-1\r\n"
                  f"{head}CSeq: 2 REGISTER\r\n{contact}Authorization: {creds}\r\n{tail}")
        out = self._run(self.core.receive(second.encode(), src, self.now))
        assert out[0].data.startswith(b"SIP/2.0 200 "), out[0].data
        self.now += 0.001
        if n % 100 == 0:
            self.now += 40.0
            while (d := self.core.next_deadline()) is not None and d <= self.now:
                self.core.handle_timer(d)

    call = register

    def finish(self) -> None:
        pass


class SaveFlow:
    """The registrar alone: Save of REGISTERs from `users` subscribers taken in turn, as
    its servicer runs it on the bytes the edge sends (a new binding the first time round,
    a refresh after), the location table growing to `users` bindings."""

    def __init__(self, users: int = 20_000) -> None:
        from services.registrar.location import Location

        self.location = Location()
        self.users = users
        self.n = 0

    def call(self) -> None:
        from services.registrar.app import _parse_save
        from services.registrar.location import SaveResult

        self.n += 1
        n = self.n
        i = n % self.users
        port = 5100 + i % 1000
        message = (f"REGISTER sip:127.0.0.1:5060 SIP/2.0\r\n"
                   f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-4242-{n}-1;rport\r\n"
                   f"From: <sip:user{i}@127.0.0.1>;tag=4242SIPpTag00{n}\r\n"
                   f"To: <sip:user{i}@127.0.0.1>\r\nCall-ID: {n}-4242@127.0.0.1\r\n"
                   f"CSeq: 2 REGISTER\r\nContact: <sip:user{i}@127.0.0.1:{port}>\r\n"
                   f"Max-Forwards: 70\r\nExpires: 3600\r\nContent-Length: 0\r\n\r\n")
        parsed = _parse_save(types.SimpleNamespace(
            message=message.encode(), source_host="127.0.0.1", source_port=port,
            transport="udp", socket="udp:127.0.0.1:5060"))
        assert not isinstance(parsed, SaveResult)
        result = self.location.save(*parsed, 1_000_000.0 + n / 1000)
        assert result.status == 200

    def finish(self) -> None:
        pass


def workload(name: str, users: int = 0, edge_check: bool = False, paced: int = 0,
             worker: bool = False, app: bool = False
             ) -> tuple[Callable[[], None], Callable[[], None]]:
    flow: InviteCall | RegisterFlow | SaveFlow
    if name == "invite":
        flow = InviteCall(paced, worker, app)
    elif name == "register":
        flow = RegisterFlow(users or 1000, digest_on_save=not edge_check)
    else:
        flow = SaveFlow(users or 20_000)
    return flow.call, flow.finish


class CollectorClock:
    """Time spent in the cyclic collector, and collections per generation (gc.callbacks)."""

    def __init__(self) -> None:
        import time

        self.clock = time.perf_counter
        self.spent = 0.0
        self.started = 0.0
        self.collections = [0, 0, 0]
        gc.callbacks.append(self._on)

    def _on(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self.started = self.clock()
        else:
            self.spent += self.clock() - self.started
            self.collections[info["generation"]] += 1


def run(name: str, warm: int, calls: int, users: int = 0, tuned: bool = False,
        report: bool = False, edge_check: bool = False, paced: int = 0,
        worker: bool = False, app: bool = False) -> None:
    import time

    from services.edge.gc_policy import THRESHOLDS as EDGE_THRESHOLDS
    from shared.service.gc_policy import THRESHOLDS, tune_collector

    if tuned:  # the policy of the process that runs this work (edge worker, registrar)
        tune_collector(THRESHOLDS if name == "save" else EDGE_THRESHOLDS)
    one, finish = workload(name, users, edge_check, paced, worker, app)
    for _ in range(warm):
        one()
    collector = CollectorClock() if report else None
    started = time.process_time()
    for _ in range(calls):
        one()
    finish()
    if collector is not None:
        cpu = time.process_time() - started
        print(f"{name}: {calls} calls, {cpu / calls * 1e6:.1f} us CPU per call, of which "
              f"{collector.spent / calls * 1e6:.1f} us in the collector "
              f"(collections per generation {collector.collections}, "
              f"gc {'tuned' if tuned else 'default'}, SIP core {compiled.mode()})")


# CPython's object allocator: every object, and most buffers (PyMem_Malloc), goes through
# one of these (PyObject_Malloc calls them through its allocator table).
_ALLOCATORS = frozenset({"_PyObject_Malloc", "_PyObject_Calloc"})


def _allocations(text: str) -> int:
    """Calls to CPython's object allocator in a callgrind output (its `calls=` lines
    under a `cfn=` naming one of `_ALLOCATORS`; names are given once, then by number)."""
    names: dict[str, str] = {}
    total = 0
    callee: str | None = None
    for line in text.splitlines():
        if line.startswith(("fn=(", "cfn=(")):
            ref, _, label = line.partition("=")[2].partition(" ")
            if label:
                names[ref] = label
            if line[0] == "c":
                callee = names.get(ref)
        elif line.startswith("calls=") and callee is not None:
            if callee in _ALLOCATORS:
                total += int(line[6:].split()[0])
            callee = None
    return total


def callgrind(name: str, warm: int, calls: int, extra: list[str]) -> tuple[float, float]:
    """(instructions, allocations) per call: the difference of two runs over `calls`."""
    totals = []
    allocs = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (0, calls):
            out = Path(tmp) / f"cg.{n}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                            sys.executable, __file__, name, "--warm", str(warm),
                            "--calls", str(n), *extra], check=True, capture_output=True)
            text = out.read_text(errors="replace")
            found = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
            assert found, "no totals in the callgrind output"
            totals.append(int(found.group(1)))
            allocs.append(_allocations(text))
    return (totals[1] - totals[0]) / calls, (allocs[1] - allocs[0]) / calls


def retained(calls: int, warm: int) -> None:
    """What the INVITE path keeps while a call's transactions wait out their timers
    (Timers J, K, L, M: 5 to 32 s): `calls` calls with no timer fired, then the growth of
    the heap (allocated blocks, objects the cyclic collector tracks, bytes traced), per
    call and per live transaction; then the same after every timer has fired."""
    import tracemalloc

    flow = InviteCall()
    for _ in range(warm):
        flow.call()
    flow.finish()
    flow.tick = False
    gc.collect()
    tracemalloc.start()
    kinds: dict[str, int] = {}
    for obj in gc.get_objects():
        kinds[type(obj).__name__] = kinds.get(type(obj).__name__, 0) - 1
    blocks0, tracked0 = sys.getallocatedblocks(), len(gc.get_objects())
    size0 = tracemalloc.get_traced_memory()[0]
    for _ in range(calls):
        flow.call()
    gc.collect()
    blocks, tracked = sys.getallocatedblocks() - blocks0, len(gc.get_objects()) - tracked0
    size = tracemalloc.get_traced_memory()[0] - size0
    live = flow.core.transactions
    for obj in gc.get_objects():
        kinds[type(obj).__name__] = kinds.get(type(obj).__name__, 0) + 1
    print(f"invite: {calls} calls, {live} transactions live ({live / calls:.1f} per call), "
          f"SIP core {compiled.mode()}")
    print(f"  retained per call: {blocks / calls:.1f} blocks, {tracked / calls:.1f} "
          f"gc-tracked objects, {size / calls:.0f} bytes (tracemalloc)")
    print(f"  per live transaction: {blocks / live:.1f} blocks, {tracked / live:.1f} "
          f"gc-tracked objects, {size / live:.0f} bytes")
    top = sorted(kinds.items(), key=lambda kv: -kv[1])[:14]
    print("  gc-tracked objects per call by type: "
          + ", ".join(f"{k} {v / calls:.1f}" for k, v in top if v > 0))
    flow.finish()
    gc.collect()
    print(f"  after the timers: {(sys.getallocatedblocks() - blocks0) / calls:.1f} blocks "
          f"per call left (bounded caches: validated lines, signatures)")
    tracemalloc.stop()


def profile(name: str, warm: int, calls: int, top: int = 22,
            edge_check: bool = False, worker: bool = False, app: bool = False) -> None:
    one, finish = workload(name, edge_check=edge_check, worker=worker, app=app)
    for _ in range(warm):
        one()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(calls):
        one()
    finish()
    prof.disable()
    stats = pstats.Stats(prof)
    total = sum(v[2] for v in stats.stats.values())  # type: ignore[attr-defined]
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2],  # type: ignore[attr-defined]
                  reverse=True)[:top]
    print(f"{name}: {calls} calls, own time by function (share of {total:.3f} s)")
    for (file, line, func), (_cc, ncalls, tottime, _cum, _callers) in rows:
        where = file.replace(str(ROOT) + "/", "")
        print(f"  {tottime / total:6.1%}  {ncalls / calls:6.1f}/call  {func} "
              f"({where}:{line})")
    # Inclusive time of the project's own frames: the flame graph's wide bars.
    mine = [(k, v) for k, v in stats.stats.items()  # type: ignore[attr-defined]
            if k[0].startswith(str(ROOT)) and "tests/bench" not in k[0]]
    mine.sort(key=lambda kv: kv[1][3], reverse=True)
    print(f"{name}: inclusive time (cumulative, share of the total)")
    for (file, line, func), (_cc, ncalls, _tot, cumtime, _callers) in mine[:top]:
        where = file.replace(str(ROOT) + "/", "")
        print(f"  {cumtime / total:6.1%}  {ncalls / calls:6.1f}/call  {func} "
              f"({where}:{line})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("workload", choices=("invite", "register", "save"))
    parser.add_argument("--users", type=int, default=0,
                        help="subscribers taken in turn (register: 1000, save: 20000)")
    parser.add_argument("--gc", choices=("default", "tuned"), default="tuned",
                        help="the collector policy (tuned: shared/service/gc_policy.py, as "
                             "the edge workers and the registrar run)")
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--warm", type=int, default=300)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--paced", type=int, default=0, metavar="RATE",
                        help="invite: the clock at RATE calls/s and the timers driven as the "
                             "worker does (10 ms ticks, next_deadline after each message); "
                             "warm up with 32 s of calls (--warm 9600 at 300) for a full wheel")
    parser.add_argument("--callgrind", action="store_true",
                        help="instructions and allocations per call, under valgrind")
    parser.add_argument("--retained", action="store_true",
                        help="invite: what live transactions keep (blocks, objects, bytes)")
    parser.add_argument("--worker", action="store_true",
                        help="invite: the routing sees the service clients and dialog "
                             "tracker of a standalone edge worker (make bench's), as "
                             "services/edge/app.py builds them")
    parser.add_argument("--app", action="store_true",
                        help="invite: every datagram through a real EdgeApp's UDP glue "
                             "(endpoint, receive, sends, timer re-arming), loop and socket "
                             "stood in for in process")
    parser.add_argument("--edge-check", action="store_true",
                        help="register: the edge checks the digest (GetCredentials' HA1) "
                             "instead of the registrar on Save (SaveWithDigest)")
    args = parser.parse_args()
    gc.collect()
    extra = ["--gc", args.gc, "--users", str(args.users), "--paced", str(args.paced)]
    if args.edge_check:
        extra.append("--edge-check")
    if args.worker:
        extra.append("--worker")
    if args.app:
        extra.append("--app")
    if args.callgrind:
        per, allocs = callgrind(args.workload, args.warm, args.calls, extra)
        print(f"{args.workload}: {per / 1e6:.3f} M instructions and {allocs:.0f} "
              f"allocations per call (callgrind, {args.calls} calls after {args.warm} "
              f"warm-up, SIP core {compiled.mode()})")
    elif args.retained:
        if args.workload != "invite":
            parser.error("--retained measures the invite workload")
        retained(args.calls, args.warm)
    elif args.profile:
        profile(args.workload, args.warm, args.calls, edge_check=args.edge_check,
                worker=args.worker, app=args.app)
    else:
        run(args.workload, args.warm, args.calls, args.users, args.gc == "tuned",
            report=args.calls > 0, edge_check=args.edge_check, paced=args.paced,
            worker=args.worker, app=args.app)
    return 0


if __name__ == "__main__":
    sys.exit(main())
