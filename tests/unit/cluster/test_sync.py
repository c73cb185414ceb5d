"""The sync machine on a fake clock: donor choice, chunks, buffering, replay, retries."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, TypeVar

from shared.cluster.sync import (
    Candidate,
    Match,
    Replay,
    SendSyncRequest,
    SyncMachine,
    SyncState,
)

ids = itertools.count(1)
T = TypeVar("T")


def only(actions: Sequence[object], kind: type[T]) -> T:
    """The one action of ``actions``, which must be a ``kind``."""
    [action] = actions
    assert isinstance(action, kind), action
    return action


def new_id() -> int:
    return next(ids)


def machine(**kw: object) -> SyncMachine:
    args: dict[str, Any] = {"needs_sync": True, "seed": False, "started_at": 0.0,
                            "sync_timeout": 5.0, "failed_donor_hold": 10.0}
    args.update(kw)
    return SyncMachine("usrloc-contact-repl", **args)


def cands(*nodes: tuple[int, bool], sip: str = "") -> dict[int, Candidate]:
    return {n: Candidate(n, ok, sip) for n, ok in nodes}


def test_waits_pending_without_a_synced_donor() -> None:
    m = machine()
    assert m.poll(1.0, cands((2, False)), new_id) == []
    assert m.state is SyncState.PENDING


def test_picks_the_first_synced_donor_and_syncs() -> None:
    m = machine()
    [req] = m.poll(1.0, cands((4, True), (2, False), (3, True)), new_id)
    assert isinstance(req, SendSyncRequest) and req.donor == 3
    assert m.state is SyncState.SYNCING
    assert m.on_chunk(3, req.sync_id, 100, 1.5)
    assert not m.on_chunk(4, req.sync_id, 100, 1.5)  # not our donor
    assert not m.on_chunk(3, req.sync_id + 99, 100, 1.5)  # another attempt
    [done] = m.on_end(3, req.sync_id, 2.0)
    assert isinstance(done, Replay) and done.updates == ()
    assert m.synced and m.records == 100 and m.packets == 1


def test_live_updates_are_buffered_and_replayed_in_order_after_the_end() -> None:
    m = machine()
    req = only(m.poll(1.0, cands((2, True)), new_id), SendSyncRequest)
    assert not m.on_update(5, b"a")
    assert not m.on_update(6, b"b")
    done = only(m.on_end(2, req.sync_id, 2.0), Replay)
    assert done == Replay(((5, b"a"), (6, b"b")))
    assert m.on_update(5, b"c")  # synced: applied at once


def test_timeout_retries_on_another_donor() -> None:
    m = machine()
    req = only(m.poll(1.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    assert req.donor == 2
    m.on_chunk(2, req.sync_id, 10, 2.0)
    assert m.poll(6.9, cands((2, True), (3, True)), new_id) == []  # 4.9 s of silence
    retry = only(m.poll(7.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    assert retry.donor == 3 and retry.sync_id != req.sync_id and m.attempts == 2
    assert not m.on_chunk(2, req.sync_id, 10, 7.1)  # late data of the first attempt


def test_donor_lost_retries_at_once_and_buffer_survives() -> None:
    m = machine()
    _req = only(m.poll(1.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    m.on_update(9, b"x")
    retry = only(m.poll(1.2, cands((3, True)), new_id), SendSyncRequest)
    assert retry.donor == 3
    done = only(m.on_end(3, retry.sync_id, 2.0), Replay)
    assert done.updates == ((9, b"x"),)


def test_a_failed_donor_is_retried_when_it_is_the_only_one() -> None:
    m = machine()
    first = only(m.poll(1.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    # 2 timed out: 3 next
    second = only(m.poll(6.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    assert (first.donor, second.donor) == (2, 3)
    # both failed recently
    third = only(m.poll(11.0, cands((2, True), (3, True)), new_id), SendSyncRequest)
    assert third.donor == 2
    m2 = machine()
    m2.poll(1.0, cands((2, True)), new_id)
    again = only(m2.poll(6.0, cands((2, True)), new_id), SendSyncRequest)
    assert again.donor == 2 and m2.attempts == 2


def test_seed_falls_back_to_synced_only_without_a_donor() -> None:
    seed = machine(seed=True, seed_fallback=2.0)
    assert seed.poll(1.0, {}, new_id) == []
    [done] = seed.poll(2.0, {}, new_id)
    assert isinstance(done, Replay) and seed.synced
    seed2 = machine(seed=True, seed_fallback=0.0)
    [req] = seed2.poll(0.0, cands((2, True)), new_id)
    assert isinstance(req, SendSyncRequest)  # a seed still syncs when it can


def test_no_sync_needed_is_ok_from_the_start() -> None:
    m = machine(needs_sync=False)
    assert m.synced and m.on_update(1, b"x")


def test_match_rules_filter_donors() -> None:
    m = machine(match=Match.EQ_SIP_ADDR, sip_addr="sip:a")
    c = {2: Candidate(2, True, "sip:b"), 3: Candidate(3, True, "sip:a")}
    req = only(m.poll(0.0, c, new_id), SendSyncRequest)
    assert req.donor == 3
    assert Match.NEQ_SIP_ADDR.accepts("a", "b") and not Match.NEQ_SIP_ADDR.accepts("a", "a")


def test_resync_request_and_progress() -> None:
    m = machine()
    req = only(m.poll(1.0, cands((2, True)), new_id), SendSyncRequest)
    m.on_chunk(2, req.sync_id, 7, 1.5)
    p = m.progress(1.5)
    assert p["state"] == "syncing" and p["donor"] == 2 and p["records"] == 7
    m.on_end(2, req.sync_id, 2.0)
    m.request(3.0)
    assert m.state is SyncState.PENDING
