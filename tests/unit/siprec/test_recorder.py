"""The recorder's steps over scripted clients (no sockets): what it asks rtpengine and
the edge, in which order, and the events it raises, for a recording that starts and
stops, fails over, fails, or is stopped while its INVITE is out."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any

import pytest

from services.siprec.clients import Edge, MediaForker, UacSender, Unreachable
from services.siprec.recorder import Recorder, RecorderClosing
from services.siprec.session import Outgoing, RecordingError

FORK = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 8\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\n"
        "m=audio 30010 RTP/AVP 8\r\nc=IN IP4 127.0.0.1\r\na=sendonly\r\n")
SRS_SDP = b"v=0\r\nm=audio 4000 RTP/AVP 8\r\na=recvonly\r\nm=audio 4002 RTP/AVP 8\r\n"


class Media(MediaForker):
    def __init__(self, subscribe_ok: bool = True) -> None:
        super().__init__()
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.subscribe_ok = subscribe_ok

    async def call(self, name: str, **fields: Any) -> Any:
        self.calls.append((name, fields))
        if name == "Subscribe":
            return SimpleNamespace(ok=self.subscribe_ok, error="" if self.subscribe_ok
                                   else "Unknown call-ID", sdp=FORK.encode(),
                                   to_tag="sub1", from_tags=["ft", "tt"])
        return SimpleNamespace(ok=True, error="")


class Uac(UacSender):
    def __init__(self, answers: list[int | Exception], gate: asyncio.Event | None = None
                 ) -> None:
        super().__init__(edges=[Edge("127.0.0.1:7000", "sip:127.0.0.1:5060;transport=udp")])
        self.answers = answers
        self.sent: list[Outgoing] = []
        self.gate = gate

    async def send(self, edge: Edge, out: Outgoing) -> tuple[int, str, list[tuple[str, str]],
                                                              bytes]:
        self.sent.append(out)
        if out.method == "BYE":
            return 200, "OK", [], b""
        if self.gate is not None:
            await self.gate.wait()
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        if answer == 200:
            return 200, "OK", [("To", f"<{out.ruri}>;tag=srs"),
                               ("Contact", "<sip:srs@10.0.0.9>"),
                               ("Content-Type", "application/sdp")], SRS_SDP
        return answer, "No", [], b""


def _recorder(media: Media, uac: Uac) -> tuple[Recorder, list[tuple[str, Mapping[str, Any]]]]:
    events: list[tuple[str, Mapping[str, Any]]] = []
    return Recorder(media, uac, on_event=lambda n, p: events.append((n, p)),
                    clock=lambda: 1000.0), events


PARAMS = {"callid": "c1", "from_tag": "ft", "srs": "sip:a@h,sip:b@h",
          "caller": "sip:alice@x", "callee": "sip:bob@y", "instance": "udp:127.0.0.1:2223",
          "headers": [["X-Tenant", "acme"]]}


async def test_start_then_stop() -> None:
    media, uac = Media(), Uac([200])
    rec, events = _recorder(media, uac)
    answer = await rec.start(PARAMS)
    assert answer["state"] == "active" and answer["srs"] == "sip:a@h"
    assert [n for n, _ in media.calls] == ["Subscribe", "SubscribeAnswer"]
    assert media.calls[1][1]["to_tag"] == "sub1" and media.calls[1][1]["sdp"] == SRS_SDP
    invite = uac.sent[0]
    assert ("X-Tenant", "acme") in invite.headers
    assert dict(invite.headers)["Contact"] == (
        "<sip:src@127.0.0.1:5060;transport=udp>;+sip.src")
    assert [n for n, _ in events] == ["E_SIPREC_START"]
    stopped = await rec.stop("c1")
    assert stopped is not None and stopped["bye_status"] == 200
    assert uac.sent[-1].method == "BYE" and media.calls[-1][0] == "Unsubscribe"
    assert [n for n, _ in events] == ["E_SIPREC_START", "E_SIPREC_STOP"]
    assert len(rec.table) == 0 and await rec.stop("c1") is None


async def test_failover_then_failure_unsubscribes_and_raises_the_event() -> None:
    media, uac = Media(), Uac([503, Unreachable("edge gone")])
    rec, events = _recorder(media, uac)
    answer = await rec.start(PARAMS)
    assert answer["state"] == "failed" and answer["tried"] == [{"srs": "sip:a@h",
                                                                 "status": 503}]
    assert media.calls[-1][0] == "Unsubscribe"
    assert [n for n, _ in events] == ["E_SIPREC_FAILED"]
    assert rec.counters["failovers"] == 1 and len(rec.table) == 0


async def test_no_media_is_refused_with_an_error_and_an_event() -> None:
    rec, events = _recorder(Media(), Uac([]))
    with pytest.raises(RecordingError, match="not anchored"):
        await rec.start({**PARAMS, "instance": ""})
    assert [n for n, _ in events] == ["E_SIPREC_FAILED"]
    rec2, events2 = _recorder(Media(subscribe_ok=False), Uac([]))
    assert (await rec2.start(PARAMS))["state"] == "failed"
    assert "Unknown call-ID" in str(events2[0][1]["reason"])


async def test_a_stop_while_the_invite_is_out_ends_it_once_answered() -> None:
    gate = asyncio.Event()
    media, uac = Media(), Uac([200], gate)
    rec, events = _recorder(media, uac)
    starting = asyncio.create_task(rec.start(PARAMS))
    while not uac.sent:
        await asyncio.sleep(0)
    assert (await rec.stop("c1")) == {"state": "stopping"}
    gate.set()
    assert (await starting)["state"] == "ended"
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"]
    assert [n for n, _ in events] == ["E_SIPREC_START", "E_SIPREC_STOP"]


async def test_bad_parameters_are_errors() -> None:
    rec, _ = _recorder(Media(), Uac([]))
    for bad in ({**PARAMS, "caller": ""}, {**PARAMS, "srs": "tel:1"},
                {**PARAMS, "headers": [["X", "a\r\nb"]]}):
        with pytest.raises(RecordingError):
            await rec.start(bad)


class MemoryStore:
    def __init__(self) -> None:
        self.rows: dict[str, dict[str, Any]] = {}

    async def open(self) -> None: ...

    async def close(self) -> None: ...

    async def put(self, call_id: str, doc: dict[str, Any], now: float) -> None:
        self.rows[call_id] = doc

    async def remove(self, call_id: str) -> None:
        self.rows.pop(call_id, None)

    async def all(self) -> list[dict[str, Any]]:
        return list(self.rows.values())


class GoneMedia(Media):
    """rtpengine no longer knows the call (its BYE's delete happened)."""

    async def call(self, name: str, **fields: Any) -> Any:
        if name == "Query":
            self.calls.append((name, fields))
            return SimpleNamespace(ok=False, error="Unknown call-ID")
        return await super().call(name, **fields)


async def test_a_restarted_recorder_takes_its_recordings_back_and_ends_lost_ones() -> None:
    store = MemoryStore()
    first = Recorder(Media(), Uac([200]), store=store, clock=lambda: 1000.0)
    assert (await first.start(PARAMS))["state"] == "active"
    assert list(store.rows) == ["c1"]
    # killed here: a new process finds it in the store
    alive, alive_uac = Media(), Uac([])
    second = Recorder(alive, alive_uac, store=store, clock=lambda: 1001.0)
    assert await second.restore() == 1 and await second.check() == 0  # the call goes on
    assert second.table.get("c1") is not None and alive_uac.sent == []
    # the call ended while no recorder was there: the check ends the recording
    gone, gone_uac = GoneMedia(), Uac([])
    events: list[str] = []
    third = Recorder(gone, gone_uac, store=store, clock=lambda: 1002.0,
                     on_event=lambda n, p: events.append(f"{n}:{p.get('reason')}"))
    assert await third.restore() == 1 and await third.check() == 1
    bye = gone_uac.sent[0]
    assert bye.method == "BYE" and dict(bye.headers)["To"].endswith(";tag=srs")
    assert events == ["E_SIPREC_STOP:call-gone"] and store.rows == {}


async def test_hold_re_invites_the_srs_and_saves_the_new_cseq() -> None:
    media, uac = Media(), Uac([200, 491, 200, 200])
    clock = [1000.0]
    events: list[tuple[str, Mapping[str, Any]]] = []
    waits: list[float] = []

    async def sleep(seconds: float) -> None:
        waits.append(seconds)
        clock[0] += seconds

    rec = Recorder(media, uac, on_event=lambda n, p: events.append((n, p)),
                   clock=lambda: clock[0], sleep=sleep)
    await rec.start(PARAMS)
    assert await rec.update("nope", "ft", "sendonly") is None
    # the callee holds (inactive); the SRS's first answer is 491, retried after its wait
    answer = await rec.update("c1", "tt", "inactive")
    assert answer == {"state": "active", "update": "updated", "held": ["1", "2"]}
    assert len(waits) == 1 and 2.1 <= waits[0] <= 4.0  # RFC 3261 §14.1
    reinvites = [o for o in uac.sent if o.method == "INVITE"][1:]
    assert [dict(o.headers)["CSeq"] for o in reinvites] == ["2 INVITE", "3 INVITE"]
    assert all(o.ruri == "sip:srs@10.0.0.9" for o in reinvites)  # the SRS's Contact
    assert await rec.update("c1", "tt", "inactive") == {
        "state": "active", "update": "unchanged", "held": ["1", "2"]}
    resumed = await rec.update("c1", "ft", "sendrecv")
    assert resumed is not None and resumed["held"] == []
    stopped = await rec.stop("c1")
    assert stopped is not None and dict(uac.sent[-1].headers)["CSeq"] == "5 BYE"
    assert rec.counters["updates"] == 3


async def test_an_srs_bye_stops_the_recording_and_the_call_goes_on() -> None:
    media, uac = Media(), Uac([200])
    rec, events = _recorder(media, uac)
    await rec.start(PARAMS)
    rs_call_id = rec.table.sessions["c1"].rs_call_id
    assert await rec.srs_bye("unknown-siprec") is None
    assert await rec.srs_bye(rs_call_id) == {"state": "ended", "callid": "c1"}
    assert [o.method for o in uac.sent] == ["INVITE"]  # no BYE of ours to the SRS
    assert media.calls[-1][0] == "Unsubscribe"
    assert events[-1][0] == "E_SIPREC_STOP" and events[-1][1]["reason"] == "srs-bye"
    assert len(rec.table) == 0 and await rec.stop("c1") is None  # the call's BYE later
    assert rec.counters["srs_ended"] == 1


async def test_side_by_side_recorders_end_each_recording_once() -> None:
    """A rolling restart runs the new recorder beside the old one (surge): a stop that
    reaches the new one for a recording the old one started is found in the store; a
    recording the old one ended is not ended again by the new one's check."""
    store = MemoryStore()
    old = Recorder(Media(), Uac([200, 200]), store=store, clock=lambda: 1000.0)
    assert (await old.start(PARAMS))["state"] == "active"
    assert (await old.start({**PARAMS, "callid": "c2"}))["state"] == "active"
    new_uac = Uac([])
    new = Recorder(GoneMedia(), new_uac, store=store, clock=lambda: 1001.0)
    assert await new.restore() == 2  # as a recorder started beside the old one might
    stopped = await new.stop("c1")  # the edge's stop went to the new one
    assert stopped is not None and stopped["bye_status"] == 200
    assert [o.method for o in new_uac.sent] == ["BYE"] and list(store.rows) == ["c2"]
    assert await old.stop("c2") is not None  # the old one ended c2 while draining
    assert await new.check() == 0  # gone from the store: forgotten, no second BYE
    assert [o.method for o in new_uac.sent] == ["BYE"] and len(new.table) == 0
    assert await new.stop("nope") is None


async def test_a_stop_adopts_a_recording_it_never_restored() -> None:
    store = MemoryStore()
    old = Recorder(Media(), Uac([200]), store=store, clock=lambda: 1000.0)
    assert (await old.start(PARAMS))["state"] == "active"
    new_uac = Uac([])
    new = Recorder(Media(), new_uac, store=store, clock=lambda: 1001.0)
    stopped = await new.stop("c1")  # started by the old one after the new one began
    assert stopped is not None and stopped["state"] == "ended"
    assert [o.method for o in new_uac.sent] == ["BYE"] and store.rows == {}
    assert new.counters["restored"] == 1 and new.counters["stopped"] == 1


async def test_a_closing_recorder_finishes_what_it_began_and_refuses_the_rest() -> None:
    gate = asyncio.Event()
    store = MemoryStore()
    media, uac = Media(), Uac([200], gate)
    rec = Recorder(media, uac, store=store, clock=lambda: 1000.0)
    starting = asyncio.create_task(rec.start(PARAMS))
    while not uac.sent:
        await asyncio.sleep(0)
    closing = asyncio.create_task(rec.close(5.0))
    await asyncio.sleep(0)
    with pytest.raises(RecorderClosing):
        await rec.start({**PARAMS, "callid": "c2"})
    with pytest.raises(RecorderClosing):
        await rec.stop("c1")
    assert not closing.done()  # the INVITE is still out
    gate.set()
    assert (await starting)["state"] == "active"
    await closing
    assert list(store.rows) == ["c1"]  # stored: whoever comes next can end it
    assert [o.method for o in uac.sent] == ["INVITE"]


class GatedMedia(Media):
    """rtpengine's `subscribe answer` waits for `gate` (a loaded host, a slow broker)."""

    def __init__(self, gate: asyncio.Event, answer_ok: bool = True) -> None:
        super().__init__()
        self.gate = gate
        self.answer_ok = answer_ok
        self.answering = asyncio.Event()  # the subscribe answer came and waits for `gate`

    async def call(self, name: str, **fields: Any) -> Any:
        if name == "SubscribeAnswer":
            self.calls.append((name, fields))
            self.answering.set()
            await self.gate.wait()
            return SimpleNamespace(ok=self.answer_ok,
                                   error="" if self.answer_ok else "Unknown call-ID")
        return await super().call(name, **fields)


async def start_gated(rec: Recorder, media: GatedMedia) -> asyncio.Task[dict[str, Any]]:
    """`rec.start(PARAMS)` as a task, once it waits for rtpengine's subscribe answer: the
    SRS answered and the recording is not started yet (the start must not end before)."""
    starting = asyncio.create_task(rec.start(PARAMS))
    answering = asyncio.create_task(media.answering.wait())
    await asyncio.wait((starting, answering), return_when=asyncio.FIRST_COMPLETED)
    answering.cancel()
    assert not starting.done(), starting.result()
    return starting


class GatedStore(MemoryStore):
    """`all()` reads its rows at once and answers only once `gate` is set (a read in the
    store's thread while the event loop goes on)."""

    def __init__(self) -> None:
        super().__init__()
        self.gate: asyncio.Event | None = None
        self.reading = asyncio.Event()

    async def all(self) -> list[dict[str, Any]]:
        rows = list(self.rows.values())
        if self.gate is not None:
            self.reading.set()
            await self.gate.wait()
        return rows


async def test_the_periodic_check_leaves_a_recording_being_started_alone() -> None:
    """The check (every `check_interval` s) runs while a recording's SRS has answered but
    rtpengine's subscribe answer is not back: the recording is active and not stored yet,
    which is no sign of another recorder having ended it.  It must go on: E_SIPREC_START,
    listed, and the call's BYE ends it with a BYE to the SRS."""
    gate = asyncio.Event()
    store = MemoryStore()
    media, uac = GatedMedia(gate), Uac([200])
    events: list[str] = []
    rec = Recorder(media, uac, store=store, clock=lambda: 1000.0,
                   on_event=lambda n, p: events.append(n))
    starting = await start_gated(rec, media)
    assert await rec.check() == 0
    gate.set()
    assert (await starting)["state"] == "active"
    assert events == ["E_SIPREC_START"] and list(store.rows) == ["c1"]
    assert [r["state"] for r in rec.listing(1000.0)] == ["active"]
    stopped = await rec.stop("c1")
    assert stopped is not None and stopped["bye_status"] == 200
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"]


async def test_a_check_that_read_the_store_before_a_start_saved_leaves_it_alone() -> None:
    """The check's read of the store began before a recording was saved and ended after:
    the recording missing from that read was not ended elsewhere."""
    store = GatedStore()
    store.gate = asyncio.Event()
    rec = Recorder(Media(), Uac([200]), store=store, clock=lambda: 1000.0)
    checking = asyncio.create_task(rec.check())
    await store.reading.wait()
    assert (await rec.start(PARAMS))["state"] == "active"
    store.gate.set()
    assert await checking == 0
    assert [(r.call_id, r.state.value) for r in rec.table] == [("c1", "active")]
    assert list(store.rows) == ["c1"]


async def test_a_stop_while_rtpengine_takes_the_srs_answer_ends_it_once_started() -> None:
    """The SRS answered (the recording is listed active) and rtpengine's subscribe answer
    is not back when siprec_stop (MI, or the call's BYE) comes: the stop waits for the
    start, then BYEs the SRS and unsubscribes; an unsubscribe before it made the
    subscribe answer fail and the recording end as failed, not stopped."""
    gate = asyncio.Event()
    media, uac = GatedMedia(gate), Uac([200])
    rec, events = _recorder(media, uac)
    starting = await start_gated(rec, media)
    assert [r["state"] for r in rec.listing(1000.0)] == ["inviting"]  # not recording yet
    assert await rec.stop("c1", "mi") == {"state": "stopping"}
    gate.set()
    assert (await starting)["state"] == "ended"
    assert [n for n, _ in media.calls] == ["Subscribe", "SubscribeAnswer", "Unsubscribe"]
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"]
    assert [(n, p.get("reason")) for n, p in events] == [("E_SIPREC_START", None),
                                                          ("E_SIPREC_STOP", "mi")]
    assert len(rec.table) == 0


def _reinvites(uac: Uac) -> list[Outgoing]:
    """The re-INVITEs to the SRS (the INVITEs in its dialog: the To has its tag)."""
    return [o for o in uac.sent if o.method == "INVITE" and ";tag=" in dict(o.headers)["To"]]


async def test_a_hold_while_the_invite_is_out_reaches_the_srs_once_started() -> None:
    """The call is put on hold (then held both ways: the latest offer wins) while the
    INVITE to the SRS is out: the SRS gets the hold as soon as the recording started,
    not never (its metadata said "not held" for the rest of the call)."""
    gate = asyncio.Event()
    store = MemoryStore()
    media, uac = Media(), Uac([200, 200], gate)
    rec = Recorder(media, uac, store=store, clock=lambda: 1000.0)
    starting = asyncio.create_task(rec.start(PARAMS))
    while not uac.sent:
        await asyncio.sleep(0)
    assert await rec.update("c1", "ft", "sendonly") == {
        "state": "inviting", "update": "deferred", "held": []}
    assert await rec.update("c1", "tt", "inactive") is not None
    gate.set()
    assert (await starting)["state"] == "active"
    reinvites = _reinvites(uac)
    assert [dict(o.headers)["CSeq"] for o in reinvites] == ["2 INVITE"]
    assert reinvites[0].body.count(b"a=inactive") == 2
    assert rec.table.sessions["c1"].held == ("1", "2")
    assert store.rows["c1"]["cseq"] == 2 and store.rows["c1"]["held"] == ["1", "2"]


async def test_a_hold_while_rtpengine_takes_the_srs_answer_waits_for_it() -> None:
    """The SRS answered (its dialog exists) but rtpengine's subscribe answer is not back
    when the call is put on hold: the re-INVITE goes once the start is over, not beside a
    start that may still fail."""
    gate = asyncio.Event()
    media, uac = GatedMedia(gate), Uac([200, 200])
    rec, events = _recorder(media, uac)
    starting = await start_gated(rec, media)
    answer = await rec.update("c1", "tt", "sendonly")  # the callee holds the caller
    assert answer == {"state": "inviting", "update": "deferred", "held": []}
    assert [o.method for o in uac.sent] == ["INVITE"]
    gate.set()
    assert (await starting)["state"] == "active"
    assert [dict(o.headers)["CSeq"] for o in _reinvites(uac)] == ["2 INVITE"]
    assert rec.table.sessions["c1"].held == ("1",)
    assert [n for n, _ in events] == ["E_SIPREC_START"]


async def test_a_hold_during_a_start_that_fails_is_dropped() -> None:
    """rtpengine refuses the SRS's answer: the start fails (BYE to the SRS); the hold that
    came meanwhile has no session to go to and leaves nothing in the store."""
    gate = asyncio.Event()
    store = MemoryStore()
    media, uac = GatedMedia(gate, answer_ok=False), Uac([200, 200])
    rec = Recorder(media, uac, store=store, clock=lambda: 1000.0)
    starting = await start_gated(rec, media)
    assert (await rec.update("c1", "tt", "inactive") or {})["update"] == "deferred"
    gate.set()
    assert (await starting)["state"] == "failed"
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"]
    assert store.rows == {} and len(rec.table) == 0
    assert await rec.update("c1", "tt", "sendrecv") is None


async def test_a_stop_after_a_hold_during_the_start_sends_no_re_invite() -> None:
    """Hold, then the call's BYE, both while rtpengine takes the SRS's answer: the
    recording ends once started, and the SRS gets its BYE without a re-INVITE first."""
    gate = asyncio.Event()
    media, uac = GatedMedia(gate), Uac([200, 200])
    rec, events = _recorder(media, uac)
    starting = await start_gated(rec, media)
    assert (await rec.update("c1", "ft", "sendonly") or {})["update"] == "deferred"
    assert await rec.stop("c1") == {"state": "stopping"}
    gate.set()
    assert (await starting)["state"] == "ended"
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"]
    assert dict(uac.sent[-1].headers)["CSeq"] == "2 BYE"
    assert [n for n, _ in events] == ["E_SIPREC_START", "E_SIPREC_STOP"]


class FailingStore(MemoryStore):
    """`put` fails while `failing` (a locked or full SQLite file)."""

    def __init__(self) -> None:
        super().__init__()
        self.failing = False

    async def put(self, call_id: str, doc: dict[str, Any], now: float) -> None:
        if self.failing:
            raise OSError("database is locked")
        await super().put(call_id, doc, now)


async def test_a_recording_whose_write_failed_is_written_again_not_dropped() -> None:
    """The store refused the started recording's row: the periodic check must not take
    it for one ended by another recorder (dropped, the call's BYE found nothing and the
    SRS's session never ended); it writes it again, and the call's BYE ends it."""
    store = FailingStore()
    store.failing = True
    uac = Uac([200])
    rec = Recorder(Media(), uac, store=store, clock=lambda: 1000.0)
    assert (await rec.start(PARAMS))["state"] == "active"
    assert store.rows == {} and rec.counters["store_errors"] == 1
    assert [e.get("stored") for e in rec.listing(1000.0)] == [False]  # siprec_list says so
    assert await rec.check() == 0  # the store still fails: kept, tried again later
    assert [r.call_id for r in rec.table] == ["c1"]
    store.failing = False
    assert await rec.check() == 0
    assert [r.call_id for r in rec.table] == ["c1"] and list(store.rows) == ["c1"]
    assert "stored" not in rec.listing(1000.0)[0]
    stopped = await rec.stop("c1")
    assert stopped is not None and stopped["bye_status"] == 200
    assert [o.method for o in uac.sent] == ["INVITE", "BYE"] and store.rows == {}


async def test_a_stored_recording_ended_elsewhere_after_a_failed_write_is_forgotten() -> None:
    """Stored once, then the hold's write (the grown CSeq) failed; meanwhile the recorder
    beside this one ended it (the call's BYE went there): the check forgets it without a
    second BYE and does not bring its row back."""
    store = FailingStore()
    old_uac = Uac([200, 200])
    old = Recorder(Media(), old_uac, store=store, clock=lambda: 1000.0)
    assert (await old.start(PARAMS))["state"] == "active"
    store.failing = True
    assert (await old.update("c1", "tt", "inactive") or {})["update"] == "updated"
    store.failing = False
    new_uac = Uac([])
    new = Recorder(Media(), new_uac, store=store, clock=lambda: 1001.0)
    assert (await new.stop("c1") or {})["state"] == "ended"  # adopted from the store
    assert await old.check() == 0
    assert len(old.table) == 0 and store.rows == {}
    assert [o.method for o in old_uac.sent] == ["INVITE", "INVITE"]  # no second BYE
