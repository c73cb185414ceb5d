"""An anycast edge cluster, end to end: real edge processes on one address, the test
steering each datagram to the node it wants (tests/support/anycast.py).

The caller (UAC) and the callee (UAS) are UDP sockets of the test: each sends from
127.0.0.<octet>, and the octet picks the node that receives the datagram - "the 200 OK
reaches node 2 while node 1 owns the INVITE". A sipp load run spreads every packet at
random over three nodes.
"""

from __future__ import annotations

import functools
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from shared.sip import Request, Response, parse_message
from tests.support.anycast import (
    AnycastEdge,
    AnycastGroup,
    Endpoint,
    start_anycast_edges,
    stop_edges,
)
from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.skipif(os.system("command -v sipp >/dev/null") != 0,
                                reason="sipp is installed by tests/peers/ensure.sh")

ANYCAST = "127.0.0.100"
UAC_HOME, UAS_HOME = 21, 22
UAC_VIA = {1: 31, 2: 32, 3: 33}  # the caller sends from 127.0.0.3k to reach node k
UAS_VIA = {1: 41, 2: 42, 3: 43}  # the callee from 127.0.0.4k
# sipp's built-in UAS answers a BYE once: one 200 dropped by a full socket buffer (the
# machine is shared; loaded, it drops datagrams) fails the call whatever the proxy does.
SIPP_BUFFERS = ["-buff_size", "4194304"]
QUIET = 0.4  # s: how long "nothing more arrives" is watched after the expected messages


@dataclass
class Mesh:
    group: AnycastGroup
    edges: list[AnycastEdge]
    uac: Endpoint
    uas: Endpoint

    @property
    def addr(self) -> tuple[str, int]:
        return (ANYCAST, self.group.port)

    def edge(self, node: int) -> AnycastEdge:
        return self.edges[node - 1]


def _mesh(nodes: int) -> Iterator[Mesh]:
    group = AnycastGroup(ANYCAST, reserve_port())
    edges = start_anycast_edges(group, nodes)
    steering = {UAC_HOME: 1, UAS_HOME: 1}
    steering.update({o: k for k, o in UAC_VIA.items() if k <= nodes})
    steering.update({o: k for k, o in UAS_VIA.items() if k <= nodes})
    group.steer(steering)
    uac = Endpoint(UAC_HOME, {k: o for k, o in UAC_VIA.items() if k <= nodes}, reserve_port())
    uas = Endpoint(UAS_HOME, {k: o for k, o in UAS_VIA.items() if k <= nodes}, reserve_port())
    mesh = Mesh(group, edges, uac, uas)
    try:
        yield mesh
        assert group.strays() == [], "a datagram reached no node"
        for e in edges:
            assert "Traceback (most recent" not in e.log_text()
    finally:
        uac.close()
        uas.close()
        stop_edges(edges)
        for e in edges:
            e.log.unlink(missing_ok=True)
        group.close()


@pytest.fixture
def mesh2() -> Iterator[Mesh]:
    yield from _mesh(2)


@pytest.fixture(params=[2, 3], ids=["2-nodes", "3-nodes"])
def mesh(request: pytest.FixtureRequest) -> Iterator[Mesh]:
    yield from _mesh(request.param)


@pytest.fixture
def mesh3() -> Iterator[Mesh]:
    yield from _mesh(3)


def udp_bound(host: str, port: int) -> bool:
    """Something has bound host:port over UDP (/proc/net/udp)."""
    a, b, c, d = (int(x) for x in host.split("."))
    want = f"{d:02X}{c:02X}{b:02X}{a:02X}:{port:04X}"
    with open("/proc/net/udp") as fh:
        return any(line.split()[1] == want for line in fh.readlines()[1:])


def sipp_calls(anycast: str, tmp_path: Path, *, calls: int, rate: int) -> None:
    """`calls` calls, `rate` a second and no hold, from a sipp UAC on 127.0.0.21 through
    the anycast address (host:port) to a sipp UAS on 127.0.0.22; fails on a failed call."""
    uas_port = reserve_port()
    uas = subprocess.Popen(["sipp", "-sn", "uas", "-i", "127.0.0.22", "-p", str(uas_port),
                            "-nostdin", "-bind_local", *SIPP_BUFFERS], cwd=tmp_path,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        eventually_sync(lambda: udp_bound("127.0.0.22", uas_port) or uas.poll() is not None,
                        10, "sipp UAS bound")
        assert uas.poll() is None, "sipp UAS exited early"
        result = subprocess.run(
            ["sipp", "-sn", "uac", "-i", "127.0.0.21", "-p", str(reserve_port()),
             "-rsa", anycast, f"127.0.0.22:{uas_port}",
             "-s", "service", "-m", str(calls), "-r", str(rate), "-d", "0", "-nostdin",
             "-timeout", "60s", "-timeout_error", *SIPP_BUFFERS],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=120)
        out = result.stdout.decode(errors="replace")
        assert result.returncode == 0, out[-2000:]  # zero failed calls
    finally:
        uas.terminate()
        uas.wait(10)


# -- a tiny UA --------------------------------------------------------------------------
class Call:
    """One call of the test's caller and callee, message by message."""

    def __init__(self, mesh: Mesh) -> None:
        self.mesh = mesh
        self.call_id = f"{uuid.uuid4().hex}@anycast"
        self.branch = f"z9hG4bK{uuid.uuid4().hex[:16]}"
        self.uac_uri = f"sip:alice@{mesh.uac.home}:{mesh.uac.port}"
        self.uas_uri = f"sip:bob@{mesh.uas.home}:{mesh.uas.port}"
        self.invite_at_uas: Request | None = None
        self.to_tag = "callee1"
        self.route: list[str] = []

    def invite(self) -> str:
        m = self.mesh
        return (f"INVITE {self.uas_uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {m.uac.home}:{m.uac.port};branch={self.branch};rport\r\n"
                f"Max-Forwards: 70\r\nFrom: <sip:alice@example.com>;tag=caller1\r\n"
                f"To: <sip:bob@example.com>\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: 1 INVITE\r\nContact: <{self.uac_uri}>\r\nContent-Length: 0\r\n\r\n")

    def cancel(self) -> str:
        return self.invite().replace("INVITE sip:", "CANCEL sip:").replace(
            "1 INVITE", "1 CANCEL")

    def ack_failure(self) -> str:
        """The ACK of a non-2xx: the INVITE's branch, the To tag of the response (§17.1.1.3)."""
        return self.invite().replace("INVITE sip:", "ACK sip:").replace(
            "1 INVITE", "1 ACK").replace("To: <sip:bob@example.com>",
                                         f"To: <sip:bob@example.com>;tag={self.to_tag}")

    def in_dialog(self, method: str, cseq: int) -> str:
        """ACK of the 2xx or BYE: a new transaction along the route set (§12.2.1.1)."""
        m = self.mesh
        routes = "".join(f"Route: {r}\r\n" for r in self.route)
        return (f"{method} {self.uas_uri} SIP/2.0\r\n"
                f"Via: SIP/2.0/UDP {m.uac.home}:{m.uac.port};branch=z9hG4bK{uuid.uuid4().hex[:16]}"
                f";rport\r\n{routes}Max-Forwards: 70\r\n"
                f"From: <sip:alice@example.com>;tag=caller1\r\n"
                f"To: <sip:bob@example.com>;tag={self.to_tag}\r\nCall-ID: {self.call_id}\r\n"
                f"CSeq: {cseq} {method}\r\nContent-Length: 0\r\n\r\n")

    def answer(self, request: Request, status: int) -> str:
        """The callee's response to `request` (what the edge forwarded to it)."""
        vias = "".join(f"Via: {v}\r\n" for v in request.get_all("Via"))
        rr = "".join(f"Record-Route: {v}\r\n" for v in request.get_all("Record-Route"))
        to = request.get("To") or ""
        if ";tag=" not in to:
            to += f";tag={self.to_tag}"
        contact = f"Contact: <{self.uas_uri}>\r\n" if request.method == "INVITE" else ""
        return (f"SIP/2.0 {status} X\r\n{vias}{rr}From: {request.get('From')}\r\n"
                f"To: {to}\r\nCall-ID: {request.call_id}\r\n"
                f"CSeq: {request.cseq.number} {request.cseq.method}\r\n{contact}"
                f"Content-Length: 0\r\n\r\n")


def collect(ep: Endpoint, until: int, timeout: float = 10.0,
            quiet: float = QUIET) -> list[Request | Response]:
    """Messages `ep` receives until `until` have arrived (deadline `timeout`), then
    whatever else arrives within QUIET (duplicates would show up there)."""
    got: list[Request | Response] = []
    deadline = time.monotonic() + timeout
    while len(got) < until and time.monotonic() < deadline:
        data = ep.recv(deadline - time.monotonic())
        if data:
            got.append(parse_message(data))
    while (data := ep.recv(quiet)) is not None:
        got.append(parse_message(data))
    return got


def first_request(ep: Endpoint, method: str, timeout: float = 10.0) -> Request:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = ep.recv(deadline - time.monotonic())
        if data:
            msg = parse_message(data)
            if isinstance(msg, Request) and msg.method == method:
                return msg
    raise AssertionError(f"no {method} arrived")


def first_final(ep: Endpoint, timeout: float = 10.0) -> Response:
    """The first final response `ep` receives (provisional ones skipped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = ep.recv(deadline - time.monotonic())
        if data:
            msg = parse_message(data)
            if isinstance(msg, Response) and msg.status >= 200:
                return msg
    raise AssertionError("no final response arrived")


def finals(msgs: list[Request | Response], method: str = "INVITE") -> list[int]:
    return [m.status for m in msgs if isinstance(m, Response) and m.status > 100
            and m.cseq.method == method]


def branches(msgs: list[Request | Response], method: str) -> set[str]:
    return {m.top_via.branch or "" for m in msgs if isinstance(m, Request)
            and m.method == method}


# -- tests -------------------------------------------------------------------------------
def test_replies_at_a_non_owner_reach_the_caller_once_in_order_and_bye_works(
        mesh: Mesh) -> None:
    nodes = len(mesh.edges)
    call = Call(mesh)
    mesh.uac.send(1, call.invite(), mesh.addr)  # node 1 owns the INVITE
    inv = first_request(mesh.uas, "INVITE")
    assert inv.top_via.params.get("cid") == "1"
    assert inv.top_via.host == ANYCAST
    mesh.uas.send(2, call.answer(inv, 180), mesh.addr)  # both replies land on node 2
    mesh.uas.send(2, call.answer(inv, 200), mesh.addr)
    got = collect(mesh.uac, until=3)
    assert finals(got) == [180, 200], got
    ok = next(m for m in got if isinstance(m, Response) and m.status == 200)
    call.route = list(reversed(ok.get_all("Record-Route")))
    assert call.route, "the edge record-routes the call"
    assert mesh.edge(1).stat("tm:replicated_in") == 2
    # ACK and BYE through another node; the 200 of the BYE lands on node 1 (not owner)
    mesh.uac.send(2, call.in_dialog("ACK", 1), mesh.addr)
    first_request(mesh.uas, "ACK")
    mesh.uac.send(nodes, call.in_dialog("BYE", 2), mesh.addr)
    bye = first_request(mesh.uas, "BYE")
    assert bye.top_via.params.get("cid") == str(nodes)
    mesh.uas.send(1, call.answer(bye, 200), mesh.addr)
    assert finals(collect(mesh.uac, until=1), "BYE") == [200]


def test_replies_split_over_two_non_owners_never_reach_the_caller_out_of_order(
        mesh3: Mesh) -> None:
    """180 via node 2 and 200 via node 3, back to back: two cluster links may reorder
    them. The caller gets each at most once and never a 180 after the 200 (a 180 that
    arrives at the owner after the 200 is dropped there: tm:late_provisional)."""
    mesh = mesh3
    dropped = 0
    for _ in range(5):
        call = Call(mesh)
        mesh.uac.send(1, call.invite(), mesh.addr)
        inv = first_request(mesh.uas, "INVITE")
        mesh.uas.send(2, call.answer(inv, 180), mesh.addr)
        mesh.uas.send(3, call.answer(inv, 200), mesh.addr)
        got = finals(collect(mesh.uac, until=2, quiet=0.3))
        assert got in ([180, 200], [200]), got
        dropped += got == [200]
    assert mesh.edge(1).stat("tm:late_provisional") == dropped


def test_cancel_at_a_non_owner_gives_487_and_one_cancel_downstream(mesh2: Mesh) -> None:
    mesh = mesh2
    call = Call(mesh)
    mesh.uac.send(1, call.invite(), mesh.addr)
    inv = first_request(mesh.uas, "INVITE")
    mesh.uas.send(1, call.answer(inv, 180), mesh.addr)
    assert finals(collect(mesh.uac, until=2)) == [180]
    mesh.uac.send(2, call.cancel(), mesh.addr)  # node 2 does not own the INVITE
    cancel = first_request(mesh.uas, "CANCEL")
    assert cancel.top_via.branch == inv.top_via.branch
    mesh.uas.send(2, call.answer(cancel, 200), mesh.addr)
    mesh.uas.send(2, call.answer(inv, 487), mesh.addr)
    at_uac = collect(mesh.uac, until=2, quiet=0.0)
    assert finals(at_uac, "CANCEL") == [200]
    assert finals(at_uac) == [487]
    # the caller's ACK lands on node 2: the owner absorbs it, so the 487 is not sent again
    # (it would be after T1 = 0.5 s, §17.2.1; watched for 3 * T1)
    mesh.uac.send(2, call.ack_failure(), mesh.addr)
    assert finals(collect(mesh.uac, until=0, quiet=1.5)) == []
    # the owner acknowledged the 487 hop by hop (§17.1.1.3) and sent no second CANCEL
    after = collect(mesh.uas, until=1)
    assert len(branches(after, "ACK")) == 1
    assert not branches(after, "CANCEL") and not branches(after, "INVITE")
    assert mesh.edge(2).stat("tm:requests_out") == 2  # the CANCEL and the ACK
    assert mesh.edge(1).stat("tm:requests_in") == 2


def test_a_retransmitted_invite_at_another_node_reaches_the_callee_once(mesh3: Mesh) -> None:
    mesh = mesh3
    call = Call(mesh)
    mesh.uac.send(1, call.invite(), mesh.addr)
    first = first_request(mesh.uas, "INVITE")
    # the owner announced the transaction (the design's window: see services/edge/anycast.py)
    for node in (2, 3):
        known = functools.partial(mesh.edge(node).stat, "tm:anycast_keys_known")
        eventually_sync(lambda: known() >= 1, 10, f"node {node} learned the INVITE's key")
    mesh.uac.send(2, call.invite(), mesh.addr)
    mesh.uac.send(3, call.invite(), mesh.addr)
    mesh.uas.send(3, call.answer(first, 486), mesh.addr)
    at_uas = [first, *collect(mesh.uas, until=1)]
    assert branches(at_uas, "INVITE") == {first.top_via.branch}  # one branch, one INVITE
    assert first_final(mesh.uac).status == 486
    mesh.uac.send(1, call.ack_failure(), mesh.addr)
    assert mesh.edge(1).stat("tm:requests_in") == 2


def test_owner_killed_the_200_still_reaches_the_caller_and_the_call_ends(mesh2: Mesh) -> None:
    mesh = mesh2
    call = Call(mesh)
    mesh.uac.send(1, call.invite(), mesh.addr)
    inv = first_request(mesh.uas, "INVITE")
    mesh.uas.send(2, call.answer(inv, 180), mesh.addr)
    assert finals(collect(mesh.uac, until=2)) == [180]
    mesh.edge(1).kill9()
    mesh.group.left(1)
    # The callee retransmits its 2xx until the ACK (RFC 3261 §13.3.1.4): T1, 2*T1, ...
    ok: Response | None = None
    interval = 0.5
    deadline = time.monotonic() + 20
    while ok is None and time.monotonic() < deadline:
        mesh.uas.send(2, call.answer(inv, 200), mesh.addr)
        data = mesh.uac.recv(interval)
        while data is not None:
            msg = parse_message(data)
            if isinstance(msg, Response) and msg.status == 200:
                ok = msg
                break
            data = mesh.uac.recv(0.05)
        interval = min(interval * 2, 4.0)
    assert ok is not None, "the 200 OK never reached the caller"
    assert mesh.edge(2).stat("tm:owner_down_stateless") >= 1
    call.route = list(reversed(ok.get_all("Record-Route")))
    mesh.uac.send(2, call.in_dialog("ACK", 1), mesh.addr)
    first_request(mesh.uas, "ACK")
    mesh.uac.send(2, call.in_dialog("BYE", 2), mesh.addr)
    bye = first_request(mesh.uas, "BYE")
    mesh.uas.send(2, call.answer(bye, 200), mesh.addr)
    assert finals(collect(mesh.uac, until=1), "BYE") == [200]


def test_sipp_load_with_packets_spread_at_random_over_three_nodes(
        mesh3: Mesh, tmp_path: Path) -> None:
    mesh = mesh3
    mesh.group.steer({})  # every datagram of sipp goes to a random node
    sipp_calls(f"{ANYCAST}:{mesh.group.port}", tmp_path, calls=500, rate=50)
    moved = sum(e.stat("tm:replicated_in") for e in mesh.edges)
    assert moved > 0  # replies and retransmissions did cross the cluster
