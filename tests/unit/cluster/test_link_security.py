"""Link security, sans-IO: the handshake and sealed frames of shared/cluster/auth.py as
ClusterState applies them. Each attack of issue 12 -- a replayed handshake, a replayed
frame, a bit-flipped frame, an unsigned injected MI command -- is refused, counted in the
node's ``clusterer:`` statistics and ends the stream; the link then recovers by itself on
a fresh handshake. The same attacks over real gRPC: tests/cluster/test_link_security.py."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from contracts.generated.sipmesh.cluster.v1 import cluster_pb2 as pb
from shared.cluster import events as ev
from shared.cluster.auth import (
    NONCE_SIZE,
    NonceRecord,
    Opener,
    Refusal,
    Refused,
    Sealer,
    link_keys,
    proof,
)
from shared.cluster.config import ClusterConfig
from shared.cluster.state import ClusterState
from tests.unit.cluster.harness import BASE, CAP, Net, Wire, mesh


def sealed_frames(w: Wire, direction: str = "d2a") -> list[bytes]:
    return [d for dr, d in w.tap if dr == direction and pb.Frame.FromString(d).mac]


def hello_of(w: Wire) -> bytes:
    return next(d for dr, d in w.tap if dr == "d2a" and pb.Frame.FromString(d).HasField("hello"))


def refused(node_state: ClusterState, kind: Refusal) -> int:
    return node_state.stats[kind.value]


def mi_injection() -> bytes:
    """What the probe of issue 12 sent: an MI command in a frame, no MAC."""
    frame = pb.Frame(packets=[pb.Packet(src=1, dst=2, ttl=25, mi=pb.MiCommand(
        cmd="ul_add", params_json='["location", "evil@x", "sip:evil@x", 0, 1]'))])
    data: bytes = frame.SerializeToString()
    return data


def recovers(net: Net, a: int, b: int) -> None:
    net.until(lambda: net.nodes[a].state.link_state(b) == "Up"
              and net.nodes[b].state.link_state(a) == "Up", 10)


# -- primitives ----------------------------------------------------------------------------
def test_keys_differ_per_direction_per_stream_and_per_secret() -> None:
    n1, n2 = b"a" * 16, b"b" * 16
    d2a, a2d = link_keys(b"s", 1, 1, 2, n1, n2)
    assert d2a != a2d
    assert link_keys(b"s", 1, 1, 2, n1, b"c" * 16) != (d2a, a2d)
    assert link_keys(b"t", 1, 1, 2, n1, n2) != (d2a, a2d)
    assert link_keys(b"s", 1, 2, 1, n1, n2) != (d2a, a2d)
    # The two roles' proofs differ: an answer cannot be reflected as a dialer's proof.
    assert proof(b"s", "answer", 1, 1, 2, n1, n2) != proof(b"s", "dial", 1, 1, 2, n1, n2)


def test_opener_takes_exactly_the_next_authentic_frame() -> None:
    key = b"k" * 32
    sealer, opener = Sealer(key), Opener(key)
    frames = [(*sealer.seal(body), body) for body in (b"one", b"two", b"three")]
    seq, mac, body = frames[0]
    opener.open(seq, body, mac)
    for bad, kind in (((seq, body, mac), Refusal.REPLAY),            # replayed
                      ((*frames[2][:1], frames[2][2], frames[2][1]), Refusal.REPLAY),  # skip
                      ((2, b"twO", frames[1][1]), Refusal.MAC),      # bit flip
                      ((2, b"two", b"\0" * 32), Refusal.MAC),        # forged MAC
                      ((2, b"two", b""), Refusal.MAC)):              # no MAC
        with pytest.raises(Refused) as info:
            opener.open(*bad)
        assert info.value.kind is kind
    opener.open(2, b"two", frames[1][1])  # refusals did not move the counter


def test_nonce_record_remembers_then_forgets_and_stays_bounded() -> None:
    record = NonceRecord(hold=10.0, limit=3)
    assert not record.seen(b"a", 0.0) and record.seen(b"a", 5.0)
    assert not record.seen(b"a", 10.5)  # expired, remembered again from now
    for n in (b"b", b"c", b"d"):
        record.seen(n, 11.0)
    assert len(record._seen) <= 3


def test_an_empty_secret_refuses_to_start_clustered() -> None:
    with pytest.raises(ValueError, match="secret is empty"):
        ClusterState(dataclasses.replace(BASE, secret=""), now=0.0, incarnation=1)


# -- the attacks of issue 12 ---------------------------------------------------------------
def test_a_replayed_handshake_is_refused_and_counted() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    [w] = net.open_wires(1, 2)
    hello = hello_of(w)
    auth = next(d for dr, d in w.tap if dr == "d2a" and pb.Frame.FromString(d).HasField("auth"))
    # The captured Hello, replayed on a new stream: its nonce was seen.
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, hello, net.now)
    assert refused(n2.state, Refusal.REPLAY) == 1
    assert ev.CloseConnection(conn, ev.CloseCode.UNAUTHENTICATED,
                              "replayed Hello (nonce seen before)") in _drain(n2.state)
    # On a node that forgot the nonce (restarted), Hello + Auth: the Auth answers an old
    # challenge, not the fresh one.
    n2.state.nonces = NonceRecord()
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, hello, net.now)
    welcome = n2.state.next_frame(conn)
    assert welcome is not None and pb.Frame.FromString(welcome).HasField("welcome")
    n2.state.receive(conn, auth, net.now)
    assert refused(n2.state, Refusal.AUTH) == 1
    assert any(isinstance(e, ev.CloseConnection) and e.conn == conn for e in _drain(n2.state))
    # Nothing of the replayed handshake reached the cluster.
    assert n2.state.link_state(1) == "Up" and sorted(n2.state.alive) == [1]


def test_a_hello_with_no_auth_times_out_and_is_counted() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, pb.Frame(hello=pb.Hello(
        cluster_id=1, node_id=1, to_node=2, nonce=b"n" * NONCE_SIZE)).SerializeToString(),
        net.now)
    _drain(n2.state)
    net.advance(n2.state.handshake_timeout + 0.01)
    assert refused(n2.state, Refusal.AUTH) == 1
    assert n2.state.conns[conn].phase.value == "closed"


def test_a_replayed_frame_is_refused_counted_and_the_link_recovers() -> None:
    net = Net()
    n1, n2 = mesh(net, 2)
    n1.put("a", "1")
    net.transfer()
    [w] = net.open_wires(1, 2)
    frame = sealed_frames(w)[-1]
    net.deliver(w, "d2a", frame)
    net.transfer()
    assert refused(n2.state, Refusal.REPLAY) == 1
    assert w.closed
    recovers(net, 1, 2)
    n1.put("b", "2")
    net.transfer()
    assert n2.get("b") == "2"


def test_a_frame_replayed_onto_another_stream_fails_its_mac() -> None:
    net = Net()
    _n1, _n2, n3 = mesh(net, 3)
    [w12] = net.open_wires(1, 2)
    [w13] = net.open_wires(1, 3)
    net.deliver(w13, "d2a", sealed_frames(w12)[0])
    net.transfer()
    assert refused(n3.state, Refusal.MAC) == 1


def test_a_bit_flipped_frame_is_refused_and_its_content_never_applied() -> None:
    net = Net()
    n1, n2 = mesh(net, 2)
    [w] = net.open_wires(1, 2)
    w.hold.add("d2a")
    n1.put("flip", "me")
    data = n1.state.next_frame(w.dconn)
    assert data is not None
    frame = pb.Frame.FromString(data)
    body = bytearray(frame.body)
    body[-1] ^= 0x01  # the last byte of the value
    frame.body = bytes(body)
    net.deliver(w, "d2a", frame.SerializeToString())
    net.transfer()
    assert refused(n2.state, Refusal.MAC) == 1 and n2.get("flip") is None


def test_an_unsigned_injected_mi_command_is_refused_on_an_open_stream() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    [w] = net.open_wires(1, 2)
    net.deliver(w, "d2a", mi_injection())
    net.transfer()
    assert refused(n2.state, Refusal.UNSIGNED) == 1 and n2.mi == []
    recovers(net, 1, 2)


def test_an_unsigned_injected_mi_command_is_refused_before_the_handshake() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    for first_hello in (False, True):
        conn = n2.state.accept(net.now)
        if first_hello:  # a Hello anyone can write, then packets instead of the Auth
            n2.state.receive(conn, pb.Frame(hello=pb.Hello(
                cluster_id=1, node_id=1, to_node=2, nonce=bytes(range(16)))
            ).SerializeToString(), net.now)
        n2.state.receive(conn, mi_injection(), net.now)
        _drain(n2.state)
    assert refused(n2.state, Refusal.UNSIGNED) == 2 and n2.mi == []
    # A made-up "sealed" frame on a stream that never authenticated: not even looked at.
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, pb.Frame(seq=1, body=b"x", mac=b"y" * 32).SerializeToString(),
                     net.now)
    assert refused(n2.state, Refusal.UNSIGNED) == 3


def test_garbage_is_refused_as_malformed() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, b"\xff\xff\xff", net.now)
    assert refused(n2.state, Refusal.MALFORMED) == 1


# -- who may join ----------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "reason"), [
    ({"secret": "not-the-secret"}, "wrong cluster secret"),
    ({"cluster_id": 7}, "wrong cluster id 7"),
    ({"node_id": 9, "members": "1-9"}, "unknown node id 9"),
])
def test_a_stranger_is_refused_counted_and_never_joins(change: dict[str, Any],
                                                       reason: str) -> None:
    net = Net()
    n1 = net.add(1, seed=True, members="1-5")
    net.advance(2)
    settings: dict[str, Any] = {"node_id": 2, "seeds": ("1@node1:1",), **change}
    node_id = int(settings["node_id"])
    cfg = dataclasses.replace(BASE, **settings)
    stranger = ClusterState(cfg, now=net.now, incarnation=99, url=f"node{node_id}:1")
    from tests.unit.cluster.harness import Node

    net.nodes[node_id] = Node(node_id, stranger)
    stranger.register_capability(CAP, net.now)
    stranger.handle_timer(net.now)
    net.advance(3)
    assert refused(n1.state, Refusal.AUTH) >= 1
    assert any(isinstance(e, ev.FrameRefused) and e.reason == reason for e in n1.events)
    assert node_id not in n1.state.peers and node_id not in n1.state.views
    assert stranger.link_state(1) != "Up" and not stranger.alive
    if "secret" in change:  # both sides see it
        assert refused(stranger, Refusal.AUTH) >= 1


def test_a_hello_for_another_node_is_refused() -> None:
    net = Net()
    _n1, n2 = mesh(net, 2)
    conn = n2.state.accept(net.now)
    n2.state.receive(conn, pb.Frame(hello=pb.Hello(
        cluster_id=1, node_id=1, to_node=3, nonce=b"z" * 16)).SerializeToString(), net.now)
    assert refused(n2.state, Refusal.AUTH) == 1


def test_default_config_has_no_secret() -> None:
    assert ClusterConfig().secret == ""  # so a cluster always needs one set explicitly


def _drain(state: ClusterState) -> list[ev.Event]:
    out = []
    while (e := state.next_event()) is not None:
        out.append(e)
    return out
