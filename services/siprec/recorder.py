"""The recorder (asyncio): runs each recording session's steps on the sans-IO table.

start: `subscribe request` on the call's rtpengine instance (through a media broker) ->
INVITE to the SRS through an edge's Uac API (the edge ACKs the 2xx) -> `subscribe answer`
with the SRS's SDP.  A refused INVITE moves to the next SRS of the list (session.py); a
recording that cannot start unsubscribes and raises E_SIPREC_FAILED.  The call itself is
never touched: the recorder is beside the call, not in its path.
stop: BYE to the SRS, `unsubscribe`, E_SIPREC_STOP.  A stop that arrives while the INVITE
is out is done as soon as it is answered.
update: a re-INVITE of the call (hold, resume) -> re-INVITE to the SRS with the new
metadata snapshot and the held streams inactive (session.py's rules); a 491 is retried
after its wait, a 481/408 ends the recording (the SRS has no such session any more).  One
that arrives while the recording is starting is sent once it started (the latest wins).
srs_bye: the SRS ended the RS (its BYE, answered by the edge): `unsubscribe`,
E_SIPREC_STOP reason `srs-bye`; the call goes on.
persistence (store.py): an active recording is written to the store, removed when it
ends; `restore()` takes them back after a restart, and `check()` (at start, then every
`[siprec] check_interval`) ends each recording whose call rtpengine no longer knows (a
BYE whose stop never reached the recorder: it was down, or the edge died); a write that
failed is done again there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog

from services.siprec.clients import Edge, MediaForker, UacSender, Unreachable
from services.siprec.metadata import Participant
from services.siprec.session import (
    Recording,
    RecordingError,
    State,
    Table,
    parse_srs_list,
)
from services.siprec.store import RecordingStore

EventSink = Callable[[str, Mapping[str, Any]], object]


class RecorderClosing(RuntimeError):
    """The recorder is stopping: the request was not taken (MI 503)."""


def _token() -> str:
    return os.urandom(8).hex()


class Recorder:
    def __init__(self, media: MediaForker, uac: UacSender, *, table: Table | None = None,
                 on_event: EventSink | None = None,
                 observe: Callable[[str, float], object] | None = None,
                 clock: Callable[[], float] = time.time,
                 store: RecordingStore | None = None,
                 sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.store = store
        self.sleep = sleep  # the 491 wait (a test's fake clock advances in it)
        self.media = media
        self.uac = uac
        self.table = table or Table()
        self.on_event = on_event
        self.observe = observe  # (outcome, seconds): setup latency histogram
        self.clock = clock
        self.log = structlog.get_logger("siprec")
        self._stop_wanted: dict[str, str] = {}  # call-id -> reason, while starting
        self._starting: set[str] = set()  # call-ids whose start() is under way
        # call-id -> (offerer's tag, direction): the call's latest re-INVITE while its
        # recording was starting, applied once started (as a stop is, `_stop_wanted`)
        self._update_wanted: dict[str, tuple[str, str]] = {}
        # call-id -> whether the store had it before: its latest save failed (SQLite
        # error, a lost PostgreSQL), check() saves it again
        self._unsaved: dict[str, bool] = {}
        self.closing = False  # stopping: starts and stops go to another recorder
        self._busy = 0  # starts and stops under way
        self._quiet = asyncio.Event()
        self._quiet.set()
        self.counters = {"started": 0, "stopped": 0, "failed": 0, "failovers": 0,
                         "refused": 0, "restored": 0, "calls_gone": 0, "store_errors": 0,
                         "updates": 0, "srs_ended": 0}

    def _emit(self, name: str, params: Mapping[str, Any]) -> None:
        if self.on_event is not None:
            self.on_event(name, params)

    # -- closing (a stopping recorder) -------------------------------------------------------
    def _enter(self) -> None:
        if self.closing:
            raise RecorderClosing("this recorder is stopping: ask another one")
        self._busy += 1
        self._quiet.clear()

    def _leave(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self._quiet.set()

    async def close(self, timeout: float) -> None:
        """Refuses new starts and stops (RecorderClosing: the edge asks another
        recorder, which finds the stored recordings), and waits at most `timeout` s
        for those under way: a start whose INVITE is out must see its answer and store
        the recording, or the SRS keeps a session nobody ends."""
        self.closing = True
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._quiet.wait(), timeout)

    async def start(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """siprec_start: record the call; the answer says how it went (never raises for
        the SRS's or rtpengine's failures; RecordingError for bad parameters,
        RecorderClosing once `close()` began)."""
        self._enter()
        try:
            return await self._start(params)
        finally:
            self._leave()

    async def _start(self, params: Mapping[str, Any]) -> dict[str, Any]:
        begun = time.perf_counter()
        call_id = str(params.get("callid") or params.get("call_id") or "")
        caller = Participant(str(params.get("caller") or ""),
                             str(params.get("caller_name") or ""))
        callee = Participant(str(params.get("callee") or ""),
                             str(params.get("callee_name") or ""))
        if not caller.aor or not callee.aor:
            raise RecordingError("caller and callee (their AORs) are required")
        headers = params.get("headers") or []
        extra: list[tuple[str, str]] = []
        for item in headers:
            name, value = (item[0], item[1]) if isinstance(item, list | tuple) else (
                str(item).partition(":")[0], str(item).partition(":")[2])
            if not str(name).strip() or any(c in f"{name}{value}" for c in "\r\n\0"):
                raise RecordingError(f"bad header {item!r}")
            extra.append((str(name).strip(), str(value).strip()))
        rec = Recording(
            call_id=call_id, from_tag=str(params.get("from_tag") or ""),
            srs=parse_srs_list(params.get("srs") or ""), caller=caller, callee=callee,
            group=str(params.get("group") or ""), instance=str(params.get("instance") or ""),
            set_id=int(params.get("set_id") or 0), extra_headers=tuple(extra),
            started=self.clock())
        try:
            self.table.begin(rec)
        except RecordingError as exc:
            self.counters["refused"] += 1
            if "already" not in str(exc):
                self._failed(rec, str(exc))
            raise
        # Until its start is over (saved, E_SIPREC_START), check() leaves it alone: an
        # active recording missing from the store is only "ended elsewhere" once saved.
        self._starting.add(call_id)
        try:
            return await self._begun(rec, params, begun)
        finally:
            self._starting.discard(call_id)
            # applied by _begun once started; a start that failed has no RS to update
            self._update_wanted.pop(call_id, None)

    async def _begun(self, rec: Recording, params: Mapping[str, Any],
                     begun: float) -> dict[str, Any]:
        call_id = rec.call_id
        edge_hint = Edge(str(params.get("edge") or ""), str(params.get("edge_sip") or ""))
        try:
            await self._run(rec, edge_hint)
        except Exception as exc:  # never leave a half-started session behind
            self.log.exception("siprec_start_crashed", call_id=call_id)
            self.table.fail(rec, f"internal error: {exc!r}")
        if self.observe is not None:
            self.observe("ok" if rec.state is State.ACTIVE else "failed",
                         time.perf_counter() - begun)
        if rec.state is not State.ACTIVE:
            await self._unsubscribe(rec)
            self.table.end(rec)
            self._stop_wanted.pop(call_id, None)
            self._failed(rec, rec.error)
            return {"state": "failed", "error": rec.error,
                    "tried": [{"srs": s, "status": c} for s, c in rec.tried]}
        self.counters["started"] += 1
        await self._save(rec, first=True)
        self.log.info("siprec_started", call_id=call_id, srs=rec.srs_uri,
                      rs_call_id=rec.rs_call_id)
        self._emit("E_SIPREC_START", {
            "callid": call_id, "srs": rec.srs_uri, "rs_callid": rec.rs_call_id,
            "group": rec.group, "caller": rec.caller.aor, "callee": rec.callee.aor})
        self._starting.discard(call_id)  # started: a stop is done now, not deferred
        reason = self._stop_wanted.pop(call_id, None)
        wanted = self._update_wanted.pop(call_id, None)
        if reason is not None:  # the call is over: a hold it had no longer matters
            await self._stop(call_id, reason)
            return {"state": "ended", "srs": rec.srs_uri, "rs_callid": rec.rs_call_id}
        if wanted is not None:
            await self._update(rec, *wanted)
            if rec.state is not State.ACTIVE:  # the SRS answered 481/408, or a stop came
                return {"state": "ended", "srs": rec.srs_uri, "rs_callid": rec.rs_call_id}
        return {"state": "active", "srs": rec.srs_uri, "rs_callid": rec.rs_call_id,
                "labels": list(rec.labels)}

    def listing(self, now: float) -> list[dict[str, Any]]:
        """siprec_list's entries.  A recording is `active` once its start is over
        (rtpengine has the SRS's answer, it is stored, E_SIPREC_START raised): until then
        it says `inviting`, as a stop of it is still deferred (`{"state": "stopping"}`).
        `stored: false` on one whose last store write failed: another recorder could not
        take it over, and this one writes it again at its next check."""
        listed = []
        for rec in self.table:
            entry = rec.as_dict(now)
            if rec.call_id in self._starting and rec.state is State.ACTIVE:
                entry["state"] = State.INVITING.value
            if rec.call_id in self._unsaved:
                entry["stored"] = False
            listed.append(entry)
        return listed

    def _failed(self, rec: Recording, why: str) -> None:
        self.counters["failed"] += 1
        self.log.warning("siprec_failed", call_id=rec.call_id, error=why,
                         tried=[s for s, _ in rec.tried])
        self._emit("E_SIPREC_FAILED", {
            "callid": rec.call_id, "srs": rec.srs_uri, "reason": why or "failed",
            "tried": [{"srs": s, "status": c} for s, c in rec.tried]})

    async def _run(self, rec: Recording, edge_hint: Edge) -> None:
        try:
            reply = await self.media.call("Subscribe", call_id=rec.call_id,
                                          set_id=rec.set_id, instance=rec.instance)
        except Unreachable as exc:
            self.table.fail(rec, f"media broker unreachable: {exc}")
            return
        if not reply.ok:
            self.table.fail(rec, f"rtpengine subscribe request: {reply.error}")
            return
        try:
            self.table.subscribed(rec, reply.sdp.decode("utf-8", "replace"), reply.to_tag,
                                  list(reply.from_tags))
        except RecordingError as exc:
            rec.subscription = reply.to_tag
            self.table.fail(rec, str(exc))
            return
        edges = await self.uac.pick(edge_hint)
        if not edges:
            self.table.fail(rec, "no edge to send the INVITE through (Uac API)")
            return
        while rec.state is State.INVITING:
            if rec.call_id in self._stop_wanted and not rec.tried:
                self.table.fail(rec, "the call ended before the recording started")
                return
            sent = False
            for edge in edges:
                contact = _contact(edge)
                out = self.table.invite(rec, rs_call_id=f"{_token()}-siprec",
                                        local_tag=_token(), contact=contact,
                                        boundary=f"sipmesh-{_token()}")
                try:
                    status, _, headers, body = await self.uac.send(edge, out)
                except Unreachable:
                    continue
                sent = True
                rec.edge_uac = edge.uac
                break
            if not sent:
                self.table.fail(rec, "no edge could be reached (Uac API)")
                return
            index = rec.srs_index
            sdp = self.table.answered(rec, status, headers, body, self.clock())
            if rec.state is State.INVITING and rec.srs_index != index:
                self.counters["failovers"] += 1
                self.log.warning("siprec_failover", call_id=rec.call_id, status=status,
                                 next_srs=rec.srs_uri)
            if sdp is None:
                continue
            try:
                answer = await self.media.call("SubscribeAnswer", call_id=rec.call_id,
                                               set_id=rec.set_id, instance=rec.instance,
                                               to_tag=rec.subscription, sdp=sdp.encode())
            except Unreachable as exc:
                answer = None
                why = f"media broker unreachable: {exc}"
            else:
                why = f"rtpengine subscribe answer: {answer.error}"
            if answer is None or not answer.ok:
                bye = self.table.stop(rec)
                if bye is not None:
                    await self._send_bye(rec, bye)
                self.table.fail(rec, why)

    async def _send_bye(self, rec: Recording, bye: Any) -> int:
        edges = await self.uac.pick(Edge(rec.edge_uac, rec.contact))
        for edge in edges:
            if not edge.uac:
                continue
            try:
                status, _, _, _ = await self.uac.send(edge, bye)
            except Unreachable:
                continue
            return status
        return 503

    async def _unsubscribe(self, rec: Recording) -> None:
        if not rec.subscription:
            return
        try:
            await self.media.call("Unsubscribe", call_id=rec.call_id, set_id=rec.set_id,
                                  instance=rec.instance, to_tag=rec.subscription)
        except Unreachable:
            pass  # the call's delete ends the subscription with it

    async def stop(self, call_id: str, reason: str = "bye") -> dict[str, Any] | None:
        """siprec_stop: end the recording of `call_id` (None: not recorded here, nor in
        the store; RecorderClosing once `close()` began)."""
        self._enter()
        try:
            return await self._stop(call_id, reason)
        finally:
            self._leave()

    async def _stop(self, call_id: str, reason: str = "bye") -> dict[str, Any] | None:
        rec = self.table.get(call_id)
        if rec is None:
            rec = await self._adopt(call_id)
        if rec is None:
            return None
        if rec.state in (State.SUBSCRIBING, State.INVITING) or call_id in self._starting:
            # done when the start is over: the SRS's answer may still be on its way to
            # rtpengine (subscribe answer), which an unsubscribe now would make fail
            self._stop_wanted[call_id] = reason
            return {"state": "stopping"}
        if rec.state is not State.ACTIVE:
            return {"state": rec.state.value}
        bye = self.table.stop(rec)
        status = await self._send_bye(rec, bye) if bye is not None else 0
        await self._unsubscribe(rec)
        duration = self.clock() - rec.answered_at if rec.answered_at is not None else 0.0
        self.table.end(rec)
        await self._forget(rec)
        self.counters["stopped"] += 1
        self.log.info("siprec_stopped", call_id=call_id, srs=rec.srs_uri, bye_status=status,
                      reason=reason)
        self._emit("E_SIPREC_STOP", {"callid": call_id, "srs": rec.srs_uri,
                                     "rs_callid": rec.rs_call_id, "reason": reason,
                                     "duration": round(duration, 3), "bye_status": status})
        return {"state": "ended", "bye_status": status, "duration": round(duration, 3)}

    # -- following the call -----------------------------------------------------------------
    async def update(self, call_id: str, offerer_tag: str,
                     direction: str) -> dict[str, Any] | None:
        """siprec_update: a re-INVITE of `call_id` was accepted, its offer `direction`
        (sent by `offerer_tag`); None when the call is not recorded here.  While the
        recording is starting it is `deferred`: sent once started, dropped if it fails."""
        rec = self.table.get(call_id)
        if rec is None:
            return None
        if call_id in self._starting:
            # Not now: the SRS has no session to re-INVITE yet (its INVITE is out), or
            # one whose start may still fail (rtpengine's subscribe answer: a re-INVITE
            # would race the BYE and store a failed recording).  Not dropped either: the
            # SRS would keep a stale hold state (metadata, a=inactive) for the rest of
            # the call.  Each offer says the whole hold state: the latest one is kept.
            self._update_wanted[call_id] = (offerer_tag, direction)
            state = State.INVITING if rec.state is State.ACTIVE else rec.state
            return {"state": state.value, "update": "deferred", "held": list(rec.held)}
        return await self._update(rec, offerer_tag, direction)

    async def _update(self, rec: Recording, offerer_tag: str,
                      direction: str) -> dict[str, Any]:
        out = self.table.update(rec, offerer_tag=offerer_tag, direction=direction,
                                now=self.clock(), boundary=f"sipmesh-{_token()}")
        outcome = "unchanged" if out is None else await self._reinvite(rec, out)
        return {"state": rec.state.value if outcome != "gone" else "ended",
                "update": outcome, "held": list(rec.held)}

    async def _reinvite(self, rec: Recording, out: Any) -> str:
        outcome = "unchanged"
        while out is not None:
            status = await self._send_bye(rec, out)  # in the RS dialog, as the BYE
            outcome = self.table.update_answered(rec, status, self.clock(), random.random())
            self.counters["updates"] += 1
            self.log.info("siprec_updated", call_id=rec.call_id, status=status,
                          outcome=outcome, held=list(rec.held))
            if rec.state is not State.ACTIVE:
                break  # stopped while the re-INVITE was out
            if outcome == "gone":
                await self._ended_by_srs(rec, f"srs-{status}")
                return outcome
            await self._save(rec)  # the CSeq grew: the BYE after a restart must too
            if outcome == "retry" and rec.retry_at is not None:
                await self.sleep(max(0.0, rec.retry_at - self.clock()))
            out = self.table.due(rec, self.clock(), boundary=f"sipmesh-{_token()}")
        return outcome

    async def srs_bye(self, rs_call_id: str) -> dict[str, Any] | None:
        """The SRS's BYE in the RS dialog `rs_call_id` (the edge answered it): the
        recording is over, the call goes on; None when no such RS is here."""
        rec = self.table.by_rs_call_id(rs_call_id)
        if rec is None:
            return None
        if rec.state in (State.SUBSCRIBING, State.INVITING):
            return {"state": rec.state.value}
        await self._ended_by_srs(rec, "srs-bye")
        return {"state": "ended", "callid": rec.call_id}

    async def _ended_by_srs(self, rec: Recording, reason: str) -> None:
        if not self.table.srs_ended(rec):
            return
        await self._unsubscribe(rec)
        duration = self.clock() - rec.answered_at if rec.answered_at is not None else 0.0
        self.table.end(rec)
        await self._forget(rec)
        self.counters["stopped"] += 1
        self.counters["srs_ended"] += 1
        self.log.info("siprec_stopped", call_id=rec.call_id, srs=rec.srs_uri, reason=reason)
        self._emit("E_SIPREC_STOP", {"callid": rec.call_id, "srs": rec.srs_uri,
                                     "rs_callid": rec.rs_call_id, "reason": reason,
                                     "duration": round(duration, 3), "bye_status": 0})

    # -- persistence ----------------------------------------------------------------------
    async def _save(self, rec: Recording, *, first: bool = False) -> None:
        """Writes `rec` (`first`: its start's write, the store never had it)."""
        if self.store is None:
            return
        try:
            await self.store.put(rec.call_id, rec.to_doc(), self.clock())
        except Exception as exc:  # the recording goes on; check() writes it again
            self.counters["store_errors"] += 1
            self.log.warning("siprec_store_failed", call_id=rec.call_id, error=repr(exc))
            self._unsaved.setdefault(rec.call_id, not first)
        else:
            self._unsaved.pop(rec.call_id, None)

    async def _forget(self, rec: Recording) -> None:
        self._unsaved.pop(rec.call_id, None)
        if self.store is None:
            return
        try:
            await self.store.remove(rec.call_id)
        except Exception as exc:
            self.counters["store_errors"] += 1
            self.log.warning("siprec_store_failed", call_id=rec.call_id, error=repr(exc))

    async def restore(self) -> int:
        """Takes back the stored recordings (after a restart); how many."""
        if self.store is None:
            return 0
        count = 0
        for doc in await self.store.all():
            try:
                rec = Recording.from_doc(doc)
            except RecordingError as exc:
                self.log.warning("siprec_bad_stored_recording", error=str(exc))
                continue
            if rec.state is State.ACTIVE and self.table.restore(rec):
                count += 1
        self.counters["restored"] += count
        if count:
            self.log.info("siprec_restored", recordings=count)
        return count

    async def _adopt(self, call_id: str) -> Recording | None:
        """A recording another recorder started and stored (the one this one replaces
        in a rolling restart, which ran beside it): taken from the store, or None."""
        if self.store is None:
            return None
        try:
            docs = await self.store.all()
        except Exception as exc:
            self.counters["store_errors"] += 1
            self.log.warning("siprec_store_failed", call_id=call_id, error=repr(exc))
            return None
        for doc in docs:
            if doc.get("call_id") != call_id:
                continue
            try:
                rec = Recording.from_doc(doc)
            except RecordingError:
                return None
            if rec.state is State.ACTIVE and self.table.restore(rec):
                self.counters["restored"] += 1
                self.log.info("siprec_adopted", call_id=call_id)
                return rec
        return None

    async def _stored(self) -> set[str] | None:
        """The call-ids in the store (None: no store, or it cannot be read)."""
        if self.store is None:
            return None
        try:
            return {str(doc.get("call_id")) for doc in await self.store.all()}
        except Exception:
            return None

    async def check(self) -> int:
        """Ends the recordings whose call rtpengine no longer knows; how many. One that
        left the store meanwhile was ended by another recorder (the one this one
        replaced ran beside it for a while): it is only forgotten here, no second BYE.
        One whose write to the store failed is written again."""
        gone = 0
        # Who is looked at is decided before the store is read: a recording being started
        # (active once its SRS answered, saved only after rtpengine's subscribe answer),
        # or started while the read was under way, is missing from that read without
        # having been ended anywhere; taking it for one ended elsewhere dropped it from
        # the table mid-start (E_SIPREC_FAILED, the SRS's session never ended) or
        # right after (never listed, nor updated on hold).
        candidates = [rec for rec in self.table
                      if rec.state is State.ACTIVE and rec.call_id not in self._starting]
        # Neither is one whose start's write failed: no other recorder can have ended
        # (and removed) what the store never had.  Taken for ended elsewhere, it was
        # dropped from the table and the call's BYE never reached its SRS.
        never_stored = {call_id for call_id, was in self._unsaved.items() if not was}
        stored = await self._stored()
        for rec in candidates:
            if rec.state is not State.ACTIVE or self.table.get(rec.call_id) is not rec:
                continue  # stopped meanwhile (the check awaits the store and rtpengine)
            if (stored is not None and rec.call_id not in stored
                    and rec.call_id not in never_stored):
                self._unsaved.pop(rec.call_id, None)
                self.table.end(rec)
                self.log.info("siprec_ended_elsewhere", call_id=rec.call_id)
                continue
            if rec.call_id in self._unsaved:
                # written again after the store's read: one stored before and missing
                # from it was ended elsewhere (above), not brought back here
                await self._save(rec)
            try:
                reply = await self.media.call("Query", call_id=rec.call_id,
                                              from_tag=rec.from_tag, set_id=rec.set_id,
                                              instance=rec.instance)
            except Unreachable:
                return gone  # no broker: nothing can be concluded now
            if not reply.ok and _call_unknown(str(reply.error)):
                gone += 1
                self.counters["calls_gone"] += 1
                await self._stop(rec.call_id, "call-gone")
        return gone

    async def stop_all(self, reason: str = "shutdown") -> None:
        for rec in self.table:
            await self._stop(rec.call_id, reason)


def _call_unknown(error: str) -> bool:
    """rtpengine's answer for a call it does not have ("Unknown call-ID", "Call-ID not
    found")."""
    low = error.lower()
    return "unknown call" in low or "not found" in low


def _contact(edge: Edge) -> str:
    """Our Contact: the edge's SIP address (in-dialog requests come back to the mesh)."""
    sip = edge.sip or f"sip:{edge.uac}"
    rest = sip.split(":", 1)[1] if sip.lower().startswith("sip:") else sip
    return f"sip:src@{rest.split('@', 1)[-1]}"
