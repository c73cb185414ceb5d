"""The link state machine on a fake clock: Up/Probe/Down as OpenSIPS times them."""

from __future__ import annotations

from shared.cluster.link import TRANSITIONS, Link, LinkState, LinkTimers

T = LinkTimers(ping_interval=4.0, ping_timeout=1.0, ping_retries=3, node_timeout=60.0)


def up_link(now: float = 0.0) -> Link:
    link = Link(T)
    seq, _ = link.poll(now)
    assert seq is not None
    assert link.on_pong(seq, now + 0.01)
    assert link.state is LinkState.UP
    return link


def test_starts_probing_and_a_pong_makes_it_up() -> None:
    link = Link(T)
    assert link.state is LinkState.PROBE
    seq, _ = link.poll(0.0)
    assert seq == 1
    assert link.poll(0.5) == (None, False)  # waiting for the pong
    assert link.on_pong(1, 0.2)
    assert link.state is LinkState.UP and link.rtt is not None and abs(link.rtt - 0.2) < 1e-9


def test_pings_every_interval_while_up() -> None:
    link = up_link()
    assert link.poll(3.9)[0] is None
    seq, _ = link.poll(4.0)
    assert seq == 2


def test_stale_pong_is_ignored() -> None:
    link = up_link()
    link.poll(4.0)
    assert not link.on_pong(1, 4.1)
    assert link.outstanding == 2


def test_timeouts_probe_then_down_after_retries_then_restart_after_node_timeout() -> None:
    link = up_link()
    link.poll(4.0)  # ping 2, never answered
    seq, changed = link.poll(5.0)  # timed out: Probe, and the first retry goes out at once
    assert changed and link.state is LinkState.PROBE and seq == 3
    assert link.poll(6.0)[0] == 4 and link.state is LinkState.PROBE
    assert link.poll(7.0)[0] == 5 and link.state is LinkState.PROBE
    seq, changed = link.poll(8.0)  # the third retry timed out too
    assert seq is None and changed and link.state is LinkState.DOWN
    assert link.poll(30.0)[0] is None  # paused for node_timeout
    seq, changed = link.poll(68.0)
    assert seq is not None and changed and link.state is LinkState.PROBE


def test_packet_from_a_down_node_reprobes_at_once() -> None:
    link = Link(LinkTimers(ping_interval=4, ping_timeout=1, ping_retries=0, node_timeout=60))
    link.poll(0.0)
    link.poll(1.0)
    assert link.state is LinkState.DOWN
    assert link.on_packet(2.0)
    assert link.state is LinkState.PROBE
    seq, _ = link.poll(2.0)
    assert seq is not None
    assert link.on_pong(seq, 2.1) and link.state is LinkState.UP


def test_send_failure_probes_without_waiting_for_the_timeout() -> None:
    link = up_link()
    link.poll(4.0)
    assert link.on_send_failed(4.0)
    assert link.state is LinkState.PROBE
    link.poll(4.0)  # the lost ping counts as timed out now
    assert link.retries == 1


def test_every_transition_is_documented() -> None:
    assert all(why for _, why in TRANSITIONS.values())


def test_a_probe_after_up_still_counts_alive_until_down() -> None:
    link = Link(LinkTimers(ping_interval=4, ping_timeout=1, ping_retries=1, node_timeout=60))
    assert not link.was_up  # never answered: not alive
    seq, _ = link.poll(0.0)
    link.on_pong(seq or 0, 0.1)
    link.poll(4.0)
    link.poll(5.0)
    assert link.state is LinkState.PROBE and link.was_up
    link.poll(6.0)
    assert link.state is LinkState.DOWN and not link.was_up
