"""Anycast transactions (services/edge/anycast.py) with several sans-IO proxy cores.

An in-memory cluster stands for `shared/cluster`: a `ClusterSend` a core emits is handed
to its target core(s) at once (`ProxyCore.replicated`), unless the target is Down. The
test chooses which node receives each packet, as anycast routing would.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import pytest

from services.edge.addresses import Interface, Source
from services.edge.anycast import (
    ANNOUNCE,
    REPLY,
    AnycastCore,
    ClusterSend,
    Route,
    decode,
    encode,
)
from services.edge.config import EdgeConfigError, parse_listen
from services.edge.core import ProxyCore, Send
from services.edge.routing import LoadedRouter, RouteContext, RouterSetup, load_router
from shared.sip import Request, Response, parse_message
from shared.transaction import TimerSettings
from tests.unit.edge.proxyharness import answer, invite

ANY = Interface("udp", "127.0.0.100", 5060, anycast=True)
UAC = ("127.0.0.21", 5091)
UAS = ("127.0.0.22", 5090)
LOOPBACK = [ipaddress.ip_network("127.0.0.0/8")]
TARGET = f"sip:bob@{UAS[0]}:{UAS[1]}"


class Cluster:
    """N edge cores on one anycast address; `alive` is what the cluster layer reports."""

    def __init__(self, n: int, router: Any = None, *, announce: bool = True) -> None:
        self.alive = set(range(1, n + 1))
        self.announce = announce
        self.cores: dict[int, ProxyCore] = {}
        for node in range(1, n + 1):
            core = ProxyCore(
                [ANY], router or load_router("services.edge.default_routing",
                                             RouterSetup(frozenset(), {})),
                settings=TimerSettings(t1=0.5, timer_c=10), trusted=LOOPBACK,
                anycast=AnycastCore(node, self.alive.__contains__))
            self.cores[node] = core
        self.now = 0.0
        self.sent: list[tuple[int, Send]] = []  # (node, what it sent to the network)
        self.cluster: list[tuple[int, ClusterSend]] = []

    def anycast(self, node: int) -> AnycastCore:
        found = self.cores[node].anycast
        assert found is not None
        return found

    def deliver(self, node: int, data: str, peer: tuple[str, int]) -> list[Send]:
        """The network hands `data` from `peer` to `node`."""
        outs = self.cores[node].receive(data.encode(), Source(ANY, *peer), self.now)
        return self._run(node, outs)

    def tick(self, seconds: float) -> list[Send]:
        self.now += seconds
        sends: list[Send] = []
        for node, core in self.cores.items():
            if node not in self.alive:
                continue
            while (deadline := core.next_deadline()) is not None and deadline <= self.now:
                sends += self._run(node, core.handle_timer(deadline))
        return sends

    def _run(self, node: int, outs: list[Any]) -> list[Send]:
        sends: list[Send] = []
        for item in outs:
            if isinstance(item, Send):
                self.sent.append((node, item))
                sends.append(item)
            elif isinstance(item, ClusterSend):
                self.cluster.append((node, item))
                wire = item if item.kind == ANNOUNCE else decode(encode(item))
                sends += self._carry(node, wire, item.node)
        return sends

    def _carry(self, src: int, item: ClusterSend, dst: int | None) -> list[Send]:
        targets = [dst] if dst is not None else [n for n in self.cores if n != src]
        targets = [n for n in targets if n in self.alive]
        sends: list[Send] = []
        if not targets and dst is not None:  # the cluster refuses: back to the sender
            return self._run(src, self.cores[src].replication_failed(item, self.now))
        for n in targets:
            if item.kind == ANNOUNCE:
                if self.announce:
                    self.anycast(n).learn(src, item.keys, self.now)
                continue
            sends += self._run(n, self.cores[n].replicated(item, src, self.now))
        return sends


def to(sends: list[Send], peer: tuple[str, int]) -> list[Request | Response]:
    return [parse_message(s.data) for s in sends if (s.dest.host, s.dest.port) == peer]


def statuses(sends: list[Send], peer: tuple[str, int] = UAC) -> list[int]:
    return [m.status for m in to(sends, peer) if isinstance(m, Response)]


def requests(sends: list[Send], peer: tuple[str, int] = UAS) -> list[Request]:
    return [m for m in to(sends, peer) if isinstance(m, Request)]


def call_invite() -> str:
    """The caller's INVITE, from UAC."""
    return invite(TARGET, port=UAC[1]).replace("127.0.0.1:5091", f"{UAC[0]}:{UAC[1]}")


def start_call(c: Cluster, owner: int = 1) -> Request:
    [fwd] = requests(c.deliver(owner, call_invite(), UAC))
    return fwd


# -- the ownership marker ------------------------------------------------------------------
def test_a_request_forwarded_out_of_an_anycast_listener_names_its_owner() -> None:
    c = Cluster(2)
    fwd = start_call(c, owner=1)
    assert fwd.top_via.params.get("cid") == "1"
    assert fwd.top_via.host == "127.0.0.100"
    # the INVITE's key was announced: node 2 knows node 1 owns it
    assert c.anycast(2).known_keys == 1


def test_the_parameter_name_is_configurable() -> None:
    core = ProxyCore([ANY], load_router("services.edge.default_routing",
                                        RouterSetup(frozenset(), {})),
                     trusted=LOOPBACK, anycast=AnycastCore(7, lambda n: True, param="owner"))
    outs = core.receive(invite(TARGET).encode(), Source(ANY, *UAC), 0.0)
    [fwd] = [parse_message(o.data) for o in outs
             if isinstance(o, Send) and o.dest.port == UAS[1]]
    assert isinstance(fwd, Request) and fwd.top_via.params.get("owner") == "7"


# -- replies at a non-owner ----------------------------------------------------------------
@pytest.mark.parametrize("nodes", [2, 3])
def test_replies_at_a_non_owner_reach_the_caller_once_in_order(nodes: int) -> None:
    c = Cluster(nodes)
    fwd = start_call(c, owner=1)
    got = c.deliver(2, answer(fwd, 180), UAS)
    got += c.deliver(nodes, answer(fwd, 200), UAS)
    assert statuses(got) == [180, 200]
    # relayed by the owner only: the non-owners sent nothing to the caller themselves
    assert {node for node, s in c.sent if (s.dest.host, s.dest.port) == UAC} == {1}
    assert c.anycast(1).counters.replies_in == 2
    assert c.anycast(2).counters.replies_out >= 1


def test_a_replicated_reply_is_never_handed_on_again() -> None:
    c = Cluster(2)
    fwd = start_call(c, owner=1)
    # node 2 receives, from node 1, a reply naming node 1: processed at node 2 (no loop)
    item = ClusterSend(REPLY, 2, answer(fwd, 180).encode(), UAS, "udp:127.0.0.100:5060")
    outs = c.cores[2].replicated(item, 1, c.now)
    assert not [o for o in outs if isinstance(o, ClusterSend)]
    assert c.anycast(2).route_reply("1", replicated=True) == (Route.LOCAL, 2)


def test_a_reply_without_cid_or_with_garbage_is_handled_locally() -> None:
    core = AnycastCore(1, lambda n: True)
    assert core.route_reply(None, False) == (Route.LOCAL, 1)
    assert core.route_reply("abc", False) == (Route.LOCAL, 1)
    assert core.route_reply("1", False) == (Route.LOCAL, 1)
    assert core.route_reply("2", False) == (Route.OWNER, 2)


# -- owner Down -------------------------------------------------------------------------
def test_owner_down_the_2xx_is_forwarded_by_its_via_and_counted() -> None:
    c = Cluster(2)
    fwd = start_call(c, owner=1)
    c.alive.discard(1)
    got = c.deliver(2, answer(fwd, 200), UAS)
    [ok] = to(got, UAC)
    assert isinstance(ok, Response) and ok.status == 200
    assert len(ok.get_all("Via")) == 1  # our Via removed (§16.7 step 9)
    assert c.anycast(2).counters.owner_down_stateless == 1
    # the UAS retransmits its 2xx until the ACK: each copy reaches the caller too
    again = c.deliver(2, answer(fwd, 200), UAS)
    assert statuses(again) == [200]


def test_a_refused_cluster_send_falls_back_to_the_via() -> None:
    c = Cluster(2)
    fwd = start_call(c, owner=1)
    item = ClusterSend(REPLY, 1, answer(fwd, 200).encode(), UAS, "udp:127.0.0.100:5060")
    outs = c.cores[2].replication_failed(item, c.now)
    assert statuses([o for o in outs if isinstance(o, Send)]) == [200]
    assert c.anycast(2).counters.replication_failed == 1


# -- CANCEL and ACK at a non-owner --------------------------------------------------------
def _cancel(fwd_from_uac: str) -> str:
    return fwd_from_uac.replace("INVITE sip", "CANCEL sip").replace("1 INVITE", "1 CANCEL")


@pytest.mark.parametrize("announce", [True, False], ids=["key-known", "auto-cancel"])
def test_cancel_at_a_non_owner_cancels_once_and_the_caller_gets_487(announce: bool) -> None:
    c = Cluster(3, announce=announce)
    original = call_invite()
    [fwd] = requests(c.deliver(1, original, UAC))
    c.deliver(1, answer(fwd, 180), UAS)
    got = c.deliver(2, _cancel(original), UAC)
    assert statuses(got) == [200]  # the CANCEL's own 200, from the owner
    cancels = [r for r in requests(got) if r.method == "CANCEL"]
    assert len(cancels) == 1 and cancels[0].top_via.branch == fwd.top_via.branch
    assert all(node == 1 for node, s in c.sent if s.data.startswith(b"CANCEL"))
    got = c.deliver(3, answer(fwd, 487), UAS)
    assert statuses(got) == [487]
    kind = "requests_out" if announce else "auto_cancel_out"
    assert getattr(c.anycast(2).counters, kind) == 1
    if not announce:  # the broadcast reached node 3 too, which does not own it
        assert c.anycast(3).counters.dropped_not_owner == 1


def test_a_non_2xx_ack_at_a_non_owner_stops_the_retransmissions() -> None:
    c = Cluster(2)
    original = call_invite()
    [fwd] = requests(c.deliver(1, original, UAC))
    got = c.deliver(2, answer(fwd, 486), UAS)
    assert statuses(got) == [486]
    to_tag = next(m for m in to(got, UAC) if isinstance(m, Response)).to_tag
    ack = original.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK").replace(
        "To: <sip:bob@127.0.0.1>", f"To: <sip:bob@127.0.0.1>;tag={to_tag}")
    got = c.deliver(2, ack, UAC)
    assert not requests(got)  # the ACK of a non-2xx is hop-by-hop: absorbed (§17.2.1)
    assert c.anycast(1).counters.requests_in == 1
    assert statuses(c.tick(5.0)) == []  # no 486 retransmissions left (§17.2.1)


def test_anycast_replicate_in_the_routing_api() -> None:
    codes: list[int] = []

    class Script:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            if request.method in ("ACK", "CANCEL"):
                codes.append(ctx.anycast_replicate())
                return
            ctx.record_route()
            ctx.forward(TARGET)

    router = LoadedRouter(Script().request_route, None, None, "test")
    c = Cluster(2, router, announce=False)
    original = call_invite()
    [fwd] = requests(c.deliver(1, original, UAC))
    c.deliver(1, answer(fwd, 486), UAS)
    ack = original.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK")
    c.deliver(2, ack, UAC)
    # node 2 broadcast it (1); node 1 owns it: absorbed by its transaction, no script
    assert codes == [1]
    assert c.anycast(2).counters.replicate_calls == 1
    assert c.anycast(1).counters.requests_in == 1
    assert statuses(c.tick(5.0)) == []
    # a request of the script's on a listener that is not anycast: -1
    plain = ProxyCore([Interface("udp", "127.0.0.1", 5060)], router)
    plain.receive(ack.encode(), Source(Interface("udp", "127.0.0.1", 5060), *UAC), 0.0)
    assert codes[-1] == -1


# -- a retransmitted initial request at another node -----------------------------------
def test_a_retransmitted_invite_at_another_node_makes_no_second_branch() -> None:
    c = Cluster(3)
    original = call_invite()
    [fwd] = requests(c.deliver(1, original, UAC))
    c.deliver(1, answer(fwd, 180), UAS)
    got = c.deliver(2, original, UAC) + c.deliver(3, original, UAC)
    assert requests(got) == []  # the callee sees one INVITE
    assert statuses(got) == [180, 180]  # the owner answers each copy (§17.2.1)
    invites = [s for _, s in c.sent if s.data.startswith(b"INVITE")]
    assert len(invites) == 1


def test_without_the_announcement_a_retransmission_would_fork_twice() -> None:
    """The window the design leaves (module docstring): measured, not hidden."""
    c = Cluster(2, announce=False)
    original = call_invite()
    c.deliver(1, original, UAC)
    assert len(requests(c.deliver(2, original, UAC))) == 1


def test_owner_down_a_retransmission_is_taken_over() -> None:
    c = Cluster(2)
    original = call_invite()
    c.deliver(1, original, UAC)
    c.alive.discard(1)
    [fwd] = requests(c.deliver(2, original, UAC))
    assert fwd.top_via.params.get("cid") == "2"


def test_keys_expire_after_64_t1() -> None:
    core = AnycastCore(1, lambda n: True, key_ttl=32.0)
    core.learn(2, [["b", "h", "5060", "INVITE"]], now=0.0)
    assert core.owner_of(("b", "h", "5060", "INVITE"), 31.0) == 2
    core.learn(2, [["b2", "h", "5060", "INVITE"]], now=40.0)  # expires the old one
    assert core.owner_of(("b", "h", "5060", "INVITE"), 40.0) is None
    assert core.known_keys == 1
    core.forget_node(2)
    assert core.known_keys == 0


# -- wire format and config -----------------------------------------------------------
def test_tm_repl_packets_round_trip_and_garbage_is_refused() -> None:
    item = ClusterSend(REPLY, 2, b"SIP/2.0 200 OK\r\n\r\n", ("10.0.0.1", 5060),
                       "udp:10.0.0.100:5060")
    back = decode(encode(item))
    assert (back.kind, back.data, back.source, back.listener) == (
        REPLY, item.data, item.source, item.listener)
    for bad in (b"", b"\x01", b"\x01{}", b"\x01[1]\nx", b"\x63{}\nx", b"\x01{\"p\":\"x\"}\n"):
        with pytest.raises(ValueError):
            decode(bad)


def test_listen_lines_take_an_anycast_flag() -> None:
    assert parse_listen("udp:10.0.0.100:5060;anycast").anycast
    assert not parse_listen("udp:10.0.0.100:5060").anycast
    with pytest.raises(EdgeConfigError):
        parse_listen("tcp:10.0.0.100:5060;anycast")
    with pytest.raises(EdgeConfigError):
        parse_listen("udp:10.0.0.100:5060;bogus")


def test_a_provisional_overtaken_by_the_final_response_is_not_relayed_after_it() -> None:
    c = Cluster(2)
    fwd = start_call(c, owner=1)
    got = c.deliver(1, answer(fwd, 200), UAS)  # the 200 reaches the owner directly...
    got += c.deliver(2, answer(fwd, 180), UAS)  # ...the 180 crosses the cluster after it
    assert statuses(got) == [200]
    assert c.anycast(1).counters.late_provisional == 1
