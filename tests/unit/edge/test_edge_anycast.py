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

    def __init__(self, n: int, router: Any = None, *, announce: bool = True,
                 hold: float = 0.0, slow_announce: bool = False) -> None:
        self.alive = set(range(1, n + 1))
        self.announce = announce
        # slow_announce: announcements wait in `pending` until `flush()` (a slow link).
        self.slow_announce = slow_announce
        self.pending: list[tuple[int, int, ClusterSend]] = []
        self.cores: dict[int, ProxyCore] = {}
        for node in range(1, n + 1):
            core = ProxyCore(
                [ANY], router or load_router("services.edge.default_routing",
                                             RouterSetup(frozenset(), {})),
                settings=TimerSettings(t1=0.5, timer_c=10), trusted=LOOPBACK,
                anycast=AnycastCore(node, self.alive.__contains__, hold=hold))
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
                if self.slow_announce:
                    self.pending.append((src, n, item))
                elif self.announce:
                    self.anycast(n).learn(src, item.keys, self.now)
                continue
            sends += self._run(n, self.cores[n].replicated(item, src, self.now))
        return sends


    def flush(self) -> None:
        """The slow link delivers the announcements it kept."""
        pending, self.pending = self.pending, []
        for src, n, item in pending:
            if n in self.alive:
                self.anycast(n).learn(src, item.keys, self.now)


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


def test_without_the_hold_a_retransmission_overtaking_the_announcement_forks_twice() -> None:
    """What the claim and hold close (anycast.py): with `[edge.tm] anycast_hold = 0` a
    retransmission that reaches another node before the announcement forks a second
    branch downstream."""
    c = Cluster(2, announce=False)
    original = call_invite()
    assert len(requests(c.deliver(1, original, UAC))) == 1
    assert len(requests(c.deliver(2, original, UAC))) == 1


@pytest.mark.parametrize("first", [1, 2])
def test_a_retransmission_overtaking_the_announcement_is_held_one_branch(first: int) -> None:
    """Both copies reach a node before either claim reaches the other node: both are
    held, both claims arrive within the hold, the lower node id processes it and the
    other node hands its copy over; the callee sees one INVITE. `first`: the node whose
    copy arrives first (so whose hold ends first)."""
    c = Cluster(2, hold=0.05, slow_announce=True)
    original = call_invite()
    second = 3 - first
    assert c.deliver(first, original, UAC) == []  # held: nothing downstream, no 100 yet
    c.now += 0.01
    assert c.deliver(second, original, UAC) == []  # its claim has not arrived: held too
    assert [c.anycast(n).counters.held for n in (1, 2)] == [1, 1]
    c.flush()  # each claim reaches the other node within the hold
    sends = c.tick(0.045)  # the first hold ends
    sends += c.tick(0.02)  # the second one
    forwarded = requests(sends)
    assert len(forwarded) == 1 and forwarded[0].top_via.params.get("cid") == "1"
    assert c.anycast(2).counters.held_to_owner == 1
    assert c.anycast(1).counters.held_to_owner == 0
    assert c.anycast(1).counters.requests_in == 1
    assert all(c.anycast(n).held_now == 0 for n in (1, 2))
    assert c.cores[2].layer.servers == {}  # no transaction at the node that lost
    # The callee answers through node 2: the reply goes to node 1, the caller gets it once.
    assert statuses(c.deliver(2, answer(forwarded[0], 486), UAS)) == [486]


def test_copies_during_a_hold_are_absorbed_and_a_lone_claim_goes_on() -> None:
    c = Cluster(2, hold=0.05)
    original = call_invite()
    assert c.deliver(1, original, UAC) == []
    c.now += 0.02
    assert c.deliver(1, original, UAC) == []  # the caller's copy, same node: absorbed
    assert c.anycast(1).counters.held_absorbed == 1
    assert c.tick(0.02) == []  # not yet: the hold runs from the first copy
    sends = c.tick(0.02)
    assert len(requests(sends)) == 1 and statuses(sends) == [100]
    # The claim was the announcement: node 2 knows the key, a later copy goes to node 1.
    assert c.anycast(1).counters.keys_announced == 1
    assert requests(c.deliver(2, original, UAC)) == []
    assert c.anycast(2).counters.requests_out == 1


def test_a_claimant_that_died_during_the_hold_does_not_take_the_invite() -> None:
    c = Cluster(2, hold=0.05, slow_announce=True)
    original = call_invite()
    c.deliver(1, original, UAC)
    c.deliver(2, original, UAC)
    c.flush()
    c.alive.discard(1)  # node 1, the winner, is Down before node 2's hold ends
    forwarded = requests(c.tick(0.06))
    assert len(forwarded) == 1 and forwarded[0].top_via.params.get("cid") == "2"
    assert c.anycast(2).counters.held_to_owner == 0


def test_only_invites_are_held() -> None:
    core = AnycastCore(1, lambda n: True, hold=0.05)
    assert core.holds("INVITE", replicated=False)
    assert not core.holds("INVITE", replicated=True)  # the sender held it already
    assert not any(core.holds(m, False) for m in ("ACK", "CANCEL", "BYE", "REGISTER"))
    assert not AnycastCore(1, lambda n: True).holds("INVITE", False)  # hold 0: off


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


def test_tm_config_bounds_the_hold() -> None:
    from services.edge.anycast import TmConfig

    TmConfig().validate()
    assert TmConfig().anycast_hold == 0.05  # on by default
    TmConfig(anycast_hold=0).validate()  # off
    for bad in (-0.1, 1.5):
        with pytest.raises(ValueError, match="anycast_hold"):
            TmConfig(anycast_hold=bad).validate()


# -- CANCEL and ACK for a dead owner's transaction (README "Anycast") ----------------------
def test_a_dead_owners_cancel_and_ack_are_relayed_statelessly_and_miss_the_branch() -> None:
    """Pins what a survivor does (README "Anycast", CANCEL and ACK for a dead owner's
    transaction): it relays them statelessly (§16.10, §16.11) - never broadcast into a
    cluster where nobody owns them - but the owner's branch id died with it, so the
    callee cannot match them to its INVITE (§9.2, §17.2.3): it answers the CANCEL 481,
    and the call ends by the callee's answer (relayed by its Via) or the caller's timer."""
    c = Cluster(2)
    original = call_invite()
    [fwd] = requests(c.deliver(1, original, UAC))
    c.deliver(1, answer(fwd, 180), UAS)
    c.alive.discard(1)  # the owner dies; node 2 knows the key, its owner is Down
    got = c.deliver(2, _cancel(original), UAC)
    cancels = [r for r in requests(got) if r.method == "CANCEL"]
    assert len(cancels) == 1  # relayed once, to the INVITE's target
    assert cancels[0].uri == fwd.uri and cancels[0].call_id == fwd.call_id
    assert cancels[0].top_via.branch != fwd.top_via.branch  # the owner's branch is lost
    counters = c.anycast(2).counters
    assert (counters.auto_cancel_out, counters.requests_out) == (0, 0)
    # The callee's 481 to that CANCEL and its later final answer reach the caller by Via.
    assert statuses(c.deliver(2, answer(cancels[0], 481), UAS)) == [481]
    got = c.deliver(2, answer(fwd, 480), UAS)
    assert statuses(got) == [480]
    assert counters.owner_down_stateless == 1  # the 480 (the 481 names node 2: its own)
    to_tag = next(m for m in to(got, UAC) if isinstance(m, Response)).to_tag
    ack = original.replace("INVITE sip", "ACK sip").replace("1 INVITE", "1 ACK").replace(
        "To: <sip:bob@127.0.0.1>", f"To: <sip:bob@127.0.0.1>;tag={to_tag}")
    acks = [r for r in requests(c.deliver(2, ack, UAC)) if r.method == "ACK"]
    # The non-2xx ACK is relayed too, on a branch the callee does not know: its final
    # response is retransmitted until Timer H, each copy relayed and ACKed again.
    assert len(acks) == 1 and acks[0].top_via.branch != fwd.top_via.branch


def test_a_cancel_of_an_invite_still_held_waits_for_its_retransmission() -> None:
    c = Cluster(2, hold=0.05)
    original = call_invite()
    assert c.deliver(1, original, UAC) == []
    assert c.deliver(1, _cancel(original), UAC) == []  # dropped here, not broadcast
    assert c.anycast(1).counters.auto_cancel_out == 0 and not c.anycast(2).counters.requests_in
    [fwd] = requests(c.tick(0.06))
    c.deliver(1, answer(fwd, 180), UAS)  # a branch is cancelled once it answered (§9.1)
    got = c.deliver(1, _cancel(original), UAC)  # the caller's CANCEL retransmission
    assert statuses(got) == [200]
    cancels = [r for r in requests(got) if r.method == "CANCEL"]
    assert len(cancels) == 1 and cancels[0].top_via.branch == fwd.top_via.branch
