"""NAT pinging decisions on a fake clock: who is pinged, by which node, through which edge;
latency and its event thresholds; removal after max_pings_lost misses."""

from __future__ import annotations

from services.registrar.location import Binding
from services.registrar.natping import NatPinger, PingConfig, owner_index
from shared.sip import parse_message
from tests.support.sipmsg import parse_request

T0 = 1_800_000_000.0


def binding(uri: str, received: str = "", aor: str = "alice@example.com") -> Binding:
    return Binding(aor=aor, uri=uri, expires=int(T0) + 600, received=received,
                   socket="udp:127.0.0.1:5060")


def test_only_natted_bindings_are_pinged_through_their_edge_to_received() -> None:
    pinger = NatPinger(PingConfig(interval=5), via_host="127.0.0.1", via_port=7000)
    natted = binding("sip:a@10.0.0.5", "sip:203.0.113.7:40000")
    direct = binding("sip:b@192.0.2.1")
    [ping] = pinger.due([natted, direct], T0, lambda aor: True)
    assert (ping.edge_host, ping.edge_port) == ("127.0.0.1", 5060)
    msg = parse_request(ping.data)
    assert msg.method == "OPTIONS" and msg.uri == "sip:a@10.0.0.5"
    assert msg.get_all("Route") == ["<sip:127.0.0.1:5060;lr>", "<sip:203.0.113.7:40000;lr>"]
    assert msg.top_via.port == 7000
    everyone = NatPinger(PingConfig(interval=5, nated_only=False))
    assert len(everyone.due([natted, direct], T0, lambda aor: True)) == 2


def test_each_aor_is_pinged_by_exactly_one_of_the_nodes() -> None:
    aors = [f"user{i}@example.com" for i in range(200)]
    bindings = [binding(f"sip:u{i}@10.0.0.5", "sip:203.0.113.7:4000", aor=a)
                for i, a in enumerate(aors)]
    counts = {a: 0 for a in aors}
    for index in range(3):
        pinger = NatPinger(PingConfig(interval=5))
        for ping in pinger.due(bindings, T0, lambda aor: owner_index(aor, 3) == index):
            counts[ping.aor] += 1
    assert set(counts.values()) == {1}


def test_reply_gives_latency_and_thresholds_decide_the_event() -> None:
    pinger = NatPinger(PingConfig(interval=5, min_us=50_000, min_delta_us=20_000))
    [ping] = pinger.due([binding("sip:a@10.0.0.5", "sip:1.2.3.4:5")], T0, lambda a: True)
    answer = pinger.reply(ping.call_id, 200, T0 + 0.010, previous_us=9_000)
    assert answer is not None and 9_900 <= answer.latency_us <= 10_100
    assert not answer.raise_event  # 10 ms: below 50 ms and moved by 1 ms only
    assert pinger.reply(ping.call_id, 200, T0 + 0.02, 0) is None  # answered once only
    assert pinger.latency_event(10_000, 60_000)  # above min_us
    assert pinger.latency_event(1_000, 30_000)  # moved by more than the delta
    assert NatPinger(PingConfig()).latency_event(5, 5)  # no thresholds: every reply


def test_missed_pings_in_a_row_remove_the_binding_and_answers_reset_the_count() -> None:
    pinger = NatPinger(PingConfig(interval=5, timeout=3, max_lost=3))
    b = binding("sip:a@10.0.0.5", "sip:1.2.3.4:5")
    now = T0
    for _ in range(2):
        pinger.due([b], now, lambda a: True)
        now += 5
    [ping] = pinger.due([b], now, lambda a: True)  # two lost so far
    assert pinger.dead() == []
    assert pinger.reply(ping.call_id, 200, now + 0.01, 0) is not None  # alive again
    for _ in range(3):
        now += 5
        pinger.due([b], now, lambda a: True)
    now += 5
    pinger.due([], now, lambda a: True)
    assert pinger.dead() == [(b.aor, b.key)]
    # A 408 made up by the edge is no life sign.
    [ping] = pinger.due([b], now, lambda a: True)
    assert pinger.reply(ping.call_id, 408, now + 0.01, 0) is None


def test_tcp_bindings_get_a_crlf_keepalive_request_udp_ones_a_plain_options() -> None:
    pinger = NatPinger(PingConfig(interval=1.0), via_port=7000)
    tcp = Binding(aor="t@example.com", uri="sip:t@10.9.9.9:5070;transport=tcp",
                  expires=int(T0) + 600, received="sip:198.51.100.7:40000;transport=tcp",
                  socket="tcp:127.0.0.1:5060")
    udp = Binding(aor="u@example.com", uri="sip:u@10.9.9.9", expires=int(T0) + 600,
                  received="sip:198.51.100.8:5062", socket="udp:127.0.0.1:5060")
    pings = {p.aor: parse_message(p.data) for p in pinger.due([tcp, udp], T0,
                                                                 lambda aor: True)}
    assert pings["t@example.com"].get("X-SipMesh-Keepalive") == "198.51.100.7:40000"
    assert not pings["u@example.com"].has("X-SipMesh-Keepalive")


def test_a_binding_with_a_path_is_pinged_along_its_path() -> None:
    pinger = NatPinger(PingConfig(interval=1.0), via_port=7000)
    behind = Binding(aor="p@example.com", uri="sip:p@10.9.9.9:5070;transport=tcp",
                     expires=int(T0) + 600, received="sip:192.0.2.50:5060;transport=tcp",
                     socket="tcp:127.0.0.1:5060",
                     path=("<sip:p1@192.0.2.50:5060;lr>", "<sip:p2@192.0.2.51;lr>"))
    [ping] = pinger.due([behind], T0, lambda aor: True)
    msg = parse_request(ping.data)
    assert msg.uri == "sip:p@10.9.9.9:5070;transport=tcp"
    assert msg.get_all("Route") == ["<sip:127.0.0.1:5060;lr>", "<sip:p1@192.0.2.50:5060;lr>",
                                    "<sip:p2@192.0.2.51;lr>"]
    assert not msg.has("X-SipMesh-Keepalive")  # the proxy's connection is not the phone's
