"""The recording sessions, sans-IO: the state of each, the requests to the SRS, failover.

One recording session (RFC 7866 §3: the RS between the SRC and the SRS) per recorded
call, keyed by the call's Call-ID.  Its states:

    subscribing -> inviting -> active -> stopping -> ended
         |             |  ^                   (failed at any step before active)
         +--> failed <-+  +-- the next SRS of the list after a refusal (OpenSIPS failover)

* `subscribing`: rtpengine is asked for the forked media (`subscribe request`).
* `inviting`: the INVITE to SRS number `srs_index` is out.  RFC 7866 §6.1.1: it carries
  `Require: siprec` (the SRS must support it, else 420) and a Contact with the
  `+sip.src` feature tag; the body is the multipart offer (body.py).  A final response
  >= 300 moves to the next SRS, unless its status is in `skip_failover` (OpenSIPS
  `skip_failover_codes`), or the list is exhausted: failed.
* `active`: the SRS answered 2xx (the edge ACKed it); its SDP went to rtpengine
  (`subscribe answer`).  The SRS dialog's state (RFC 3261 §12.1.2: remote tag, remote
  target, route set = the Record-Route reversed) is kept for the BYE.
* `stopping`: the call ended (BYE, an operator's stop): BYE to the SRS (§12.2.1.1:
  CSeq + 1, the route set, the remote target), `unsubscribe` to rtpengine.
* `ended`: gone from the table once the stop is done.

Following the call (RFC 7866 §8.1.2, §8.3; RFC 7865 §6.1.1): a re-INVITE of the recorded
call that puts it on hold or takes it off (RFC 3264 §8.4: the offer's direction) changes
which streams flow; `update()` turns the offer's direction into the RS streams that are on
hold (`hold_rule`) and, when that differs from what the SRS has, sends the SRS a re-INVITE
in the RS dialog (CSeq + 1) with a new complete metadata snapshot (the held party sends
nothing) and the SDP with those streams `a=inactive` (the o= version grown).  One INVITE
transaction at a time (RFC 3261 §14.1): a change that comes while one is out waits for its
answer; a 491 is retried after 2.1-4 s (we own the RS Call-ID, §14.1) on the caller's
clock (`due(now)`); a 481/408 ends the RS dialog (§12.2.1.2); any other refusal leaves the
RS as it was (§14.1).  An SRS that sends BYE (RFC 7866 §7.1.2, the SRS ends the RS) ends
the recording without a BYE of ours: `srs_ended()`.

The adapter (recorder.py) does the I/O and passes `now` in; the table never raises on
what a peer sends (a malformed answer is a failure of that SRS).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.siprec.body import hold_sdp, label_sdp, media_count, multipart
from services.siprec.metadata import Participant, Snapshot, build_metadata, two_party

DEFAULT_SKIP_FAILOVER = frozenset({486, 603})  # the SRS said "not this call": no retry


class State(enum.StrEnum):
    SUBSCRIBING = "subscribing"
    INVITING = "inviting"
    ACTIVE = "active"
    STOPPING = "stopping"
    ENDED = "ended"
    FAILED = "failed"


class RecordingError(ValueError):
    """A recording that cannot be started (bad SRS list, no media, a duplicate)."""


@dataclass(frozen=True)
class Outgoing:
    """A request for the edge's Uac API."""

    method: str
    ruri: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    route: tuple[str, ...] = ()


@dataclass
class Recording:
    call_id: str
    from_tag: str
    srs: tuple[str, ...]
    caller: Participant
    callee: Participant
    group: str = ""
    instance: str = ""  # the call's rtpengine instance
    set_id: int = 0
    extra_headers: tuple[tuple[str, str], ...] = ()
    started: float = 0.0
    state: State = State.SUBSCRIBING
    srs_index: int = 0
    # rtpengine's subscription
    subscription: str = ""  # its to-tag
    labels: tuple[str, ...] = ()
    offer_sdp: str = ""
    # the dialog with the SRS (RFC 3261 §12.1.2)
    rs_call_id: str = ""
    local_tag: str = ""
    remote_tag: str = ""
    remote_target: str = ""
    route_set: tuple[str, ...] = ()
    cseq: int = 1
    contact: str = ""
    answered_at: float | None = None
    edge_uac: str = ""  # the edge whose Uac API carries this session's requests
    error: str = ""
    tried: list[tuple[str, int]] = field(default_factory=list)  # (srs, status)
    # following the call (re-INVITE / hold): the labels of the RS streams on hold
    held: tuple[str, ...] = ()  # what the SRS has (its last 2xx)
    wanted: tuple[str, ...] | None = None  # what the call has now, when it differs
    updating: tuple[str, ...] | None = None  # the re-INVITE out (RFC 3261 §14.1: one)
    retry_at: float | None = None  # after a 491 (§14.1)
    offers: int = 0  # offers sent after the first (the o= version grows by each)

    @property
    def srs_uri(self) -> str:
        return self.srs[min(self.srs_index, len(self.srs) - 1)]

    def to_doc(self) -> dict[str, Any]:
        """What the store keeps of an active recording (everything to end it)."""
        return {
            "call_id": self.call_id, "from_tag": self.from_tag, "srs": list(self.srs),
            "caller": [self.caller.aor, self.caller.name],
            "callee": [self.callee.aor, self.callee.name], "group": self.group,
            "instance": self.instance, "set_id": self.set_id, "started": self.started,
            "state": self.state.value, "srs_index": self.srs_index,
            "subscription": self.subscription, "labels": list(self.labels),
            "rs_call_id": self.rs_call_id, "local_tag": self.local_tag,
            "remote_tag": self.remote_tag, "remote_target": self.remote_target,
            "route_set": list(self.route_set), "cseq": self.cseq, "contact": self.contact,
            "answered_at": self.answered_at, "edge_uac": self.edge_uac,
            "tried": [[s, c] for s, c in self.tried],
            "offer_sdp": self.offer_sdp, "held": list(self.held), "offers": self.offers,
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> Recording:
        """A recording back from the store; RecordingError when the row is not one."""
        try:
            rec = cls(
                call_id=str(doc["call_id"]), from_tag=str(doc["from_tag"]),
                srs=tuple(str(s) for s in doc["srs"]),
                caller=Participant(str(doc["caller"][0]), str(doc["caller"][1])),
                callee=Participant(str(doc["callee"][0]), str(doc["callee"][1])),
                group=str(doc["group"]), instance=str(doc["instance"]),
                set_id=int(doc["set_id"]), started=float(doc["started"]),
                state=State(doc["state"]), srs_index=int(doc["srs_index"]),
                subscription=str(doc["subscription"]),
                labels=tuple(str(x) for x in doc["labels"]),
                rs_call_id=str(doc["rs_call_id"]), local_tag=str(doc["local_tag"]),
                remote_tag=str(doc["remote_tag"]), remote_target=str(doc["remote_target"]),
                route_set=tuple(str(x) for x in doc["route_set"]), cseq=int(doc["cseq"]),
                contact=str(doc["contact"]),
                answered_at=None if doc["answered_at"] is None else float(doc["answered_at"]),
                edge_uac=str(doc.get("edge_uac", "")),
                tried=[(str(s), int(c)) for s, c in doc["tried"]],
                offer_sdp=str(doc.get("offer_sdp", "")),
                held=tuple(str(x) for x in doc.get("held", ())),
                offers=int(doc.get("offers", 0)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise RecordingError(f"not a stored recording: {exc!r}") from None
        if not rec.srs or not rec.call_id:
            raise RecordingError("not a stored recording: no call or SRS")
        return rec

    def as_dict(self, now: float) -> dict[str, object]:
        """One entry of the `siprec_list` MI answer."""
        return {"callid": self.call_id, "from_tag": self.from_tag, "state": self.state.value,
                "srs": self.srs_uri, "srs_list": list(self.srs), "group": self.group,
                "caller": self.caller.aor, "callee": self.callee.aor,
                "rtpengine": self.instance, "subscription": self.subscription,
                "rs_callid": self.rs_call_id, "labels": list(self.labels),
                "duration": round(now - self.answered_at, 3)
                if self.answered_at is not None else 0,
                "tried": [{"srs": s, "status": c} for s, c in self.tried],
                "held": list(self.held)}


def parse_srs_list(value: str | Sequence[str]) -> tuple[str, ...]:
    """OpenSIPS `siprec_start_recording`'s `srs`: a comma-separated list tried in order."""
    items = value.split(",") if isinstance(value, str) else list(value)
    out = tuple(s.strip() for s in items if s and s.strip())
    if not out:
        raise RecordingError("no SRS given")
    for uri in out:
        if not uri.lower().startswith(("sip:", "sips:")) or any(c in uri for c in "\r\n\0 <>"):
            raise RecordingError(f"bad SRS URI {uri!r}")
    return out


class Table:
    """Every recording session of this process, by the recorded call's Call-ID."""

    def __init__(self, *, skip_failover: frozenset[int] = DEFAULT_SKIP_FAILOVER,
                 user_agent: str = "SipMesh-SRC") -> None:
        self.sessions: dict[str, Recording] = {}
        self.skip_failover = skip_failover
        self.user_agent = user_agent

    def __len__(self) -> int:
        return len(self.sessions)

    def __iter__(self) -> Iterator[Recording]:
        return iter(list(self.sessions.values()))

    def get(self, call_id: str) -> Recording | None:
        return self.sessions.get(call_id)

    def restore(self, rec: Recording) -> bool:
        """A recording taken back from the store (after a restart); False when this
        table has that call already."""
        if rec.call_id in self.sessions:
            return False
        self.sessions[rec.call_id] = rec
        return True

    def begin(self, rec: Recording) -> Recording:
        """A new recording; RecordingError for a call recorded already or without media."""
        if not rec.call_id:
            raise RecordingError("no call-id")
        if rec.call_id in self.sessions:
            raise RecordingError(f"call {rec.call_id} is being recorded already")
        if not rec.instance:
            # The media is forked by rtpengine: a call it does not anchor cannot be
            # recorded (never a silent success without media).
            raise RecordingError("the call's media is not anchored on rtpengine "
                                 "(ctx.media.offer / [edge] media_anchor)")
        self.sessions[rec.call_id] = rec
        return rec

    # -- rtpengine -----------------------------------------------------------------------
    def subscribed(self, rec: Recording, sdp: str, to_tag: str,
                   from_tags: Sequence[str]) -> None:
        """rtpengine's `subscribe request` answer: label its m-lines (one per leg, in
        `from_tags` order; RFC 7866 §8.1.1 labels tie SDP streams to the metadata)."""
        count = media_count(sdp)
        if count < 2 or not to_tag:
            raise RecordingError(f"rtpengine forked {count} streams (two legs expected)")
        legs = list(from_tags)[:count] if len(from_tags) >= count else [""] * count
        # the caller's leg first: label 1 is what the caller sends, 2 what the callee sends
        caller_first = not legs[0] or legs[0] == rec.from_tag
        labels = [str(i + 1) for i in range(count)] if caller_first else [
            str(count - i) for i in range(count)]
        rec.subscription = to_tag
        rec.offer_sdp = label_sdp(sdp, labels)
        rec.labels = tuple(sorted(labels, key=int))
        rec.state = State.INVITING

    # -- the SRS ---------------------------------------------------------------------------
    def invite(self, rec: Recording, *, rs_call_id: str, local_tag: str, contact: str,
               boundary: str) -> Outgoing:
        """The INVITE to the current SRS (RFC 7866 §6.1.1, §7)."""
        content_type, body = multipart(rec.offer_sdp, _metadata(rec, ()), boundary)
        rec.rs_call_id, rec.local_tag, rec.contact = rs_call_id, local_tag, contact
        rec.cseq = 1
        rec.state = State.INVITING
        headers = (
            ("From", f"<sip:src@{_host(contact)}>;tag={local_tag}"),
            ("To", f"<{rec.srs_uri}>"),
            ("Call-ID", rs_call_id),
            ("CSeq", f"{rec.cseq} INVITE"),
            ("Contact", f"<{contact}>;+sip.src"),  # RFC 7866 §6.1.1: the SRC feature tag
            ("Require", "siprec"),
            ("Accept", "application/sdp, " + "application/rs-metadata+xml"),
            ("Content-Type", content_type),
            ("User-Agent", self.user_agent),
            *rec.extra_headers,
        )
        return Outgoing("INVITE", rec.srs_uri, headers, body)

    def answered(self, rec: Recording, status: int, headers: Sequence[tuple[str, str]],
                 body: bytes, now: float) -> str | None:
        """The SRS's final response.  2xx: the SRS's SDP (to give to rtpengine); else
        None, and the state says what next: `inviting` the next SRS, or `failed`."""
        rec.tried.append((rec.srs_uri, status))
        if 200 <= status < 300:
            to_tag = contact = ""
            rr: list[str] = []
            content_type = ""
            for name, value in headers:
                low = name.lower()
                if low in ("to", "t"):
                    to_tag = _tag(value)
                elif low in ("contact", "m") and not contact:
                    contact = _uri(value)
                elif low == "record-route":
                    rr += [v.strip() for v in _split(value)]
                elif low in ("content-type", "c"):
                    content_type = value.lower()
            sdp = body.decode("utf-8", "replace")
            if not to_tag or not contact or "m=" not in sdp or (
                    content_type and "application/sdp" not in content_type):
                self._refused(rec, status, "2xx without To tag, Contact or SDP")
                return None
            rec.remote_tag, rec.remote_target = to_tag, contact
            rec.route_set = tuple(reversed(rr))  # §12.1.2: the UAC reverses it
            rec.state = State.ACTIVE
            rec.answered_at = now
            return sdp
        self._refused(rec, status, f"SRS answered {status}")
        return None

    def _refused(self, rec: Recording, status: int, why: str) -> None:
        rec.error = why
        if status in self.skip_failover or rec.srs_index + 1 >= len(rec.srs):
            rec.state = State.FAILED
        else:
            rec.srs_index += 1
            rec.state = State.INVITING

    def fail(self, rec: Recording, why: str) -> None:
        rec.error = why
        rec.state = State.FAILED

    def stop(self, rec: Recording) -> Outgoing | None:
        """The call ended: BYE to the SRS when its session was up (§12.2.1.1), else None."""
        was = rec.state
        rec.state = State.STOPPING
        if was is not State.ACTIVE:
            return None
        rec.cseq += 1
        headers = (
            ("From", f"<sip:src@{_host(rec.contact)}>;tag={rec.local_tag}"),
            ("To", f"<{rec.srs_uri}>;tag={rec.remote_tag}"),
            ("Call-ID", rec.rs_call_id),
            ("CSeq", f"{rec.cseq} BYE"),
            ("User-Agent", self.user_agent),
        )
        return Outgoing("BYE", rec.remote_target, headers, b"", rec.route_set)

    # -- following the call ------------------------------------------------------------------
    def update(self, rec: Recording, *, offerer_tag: str, direction: str, now: float,
               boundary: str) -> Outgoing | None:
        """A re-INVITE of the recorded call was accepted, its offer saying `direction`
        (sent by the party whose From tag is `offerer_tag`): the re-INVITE to the SRS
        when the streams on hold change and none is out, else None."""
        wanted = hold_rule(rec, offerer_tag, direction)
        if wanted is None or rec.state is not State.ACTIVE:
            return None
        rec.wanted = wanted
        return self.due(rec, now, boundary=boundary)

    def due(self, rec: Recording, now: float, *, boundary: str) -> Outgoing | None:
        """The re-INVITE that brings the SRS to what the call has, if one may go now."""
        target = rec.wanted
        if (rec.state is not State.ACTIVE or target is None or rec.updating is not None
                or not rec.offer_sdp):
            return None
        if target == rec.held:
            rec.wanted = None
            return None
        if rec.retry_at is not None and now < rec.retry_at:
            return None  # after a 491 (RFC 3261 §14.1)
        rec.retry_at = None
        rec.updating = target
        rec.offers += 1
        rec.cseq += 1
        sdp = hold_sdp(rec.offer_sdp, target, _sdp_version(rec.offer_sdp) + rec.offers)
        content_type, body = multipart(sdp, _metadata(rec, target), boundary)
        headers = (
            ("From", f"<sip:src@{_host(rec.contact)}>;tag={rec.local_tag}"),
            ("To", f"<{rec.srs_uri}>;tag={rec.remote_tag}"),
            ("Call-ID", rec.rs_call_id),
            ("CSeq", f"{rec.cseq} INVITE"),
            ("Contact", f"<{rec.contact}>;+sip.src"),  # RFC 7866 §6.1.1
            ("Accept", "application/sdp, application/rs-metadata+xml"),
            ("Content-Type", content_type),
            ("User-Agent", self.user_agent),
        )
        return Outgoing("INVITE", rec.remote_target, headers, body, rec.route_set)

    def update_answered(self, rec: Recording, status: int, now: float,
                        jitter: float = 0.5) -> str:
        """The SRS's final answer to our re-INVITE: `updated`, `retry` (491: `due()` from
        `rec.retry_at`), `refused` (the RS stays as it was) or `gone` (481/408: the RS
        dialog is over, RFC 3261 §12.2.1.2).  `jitter` in [0, 1] picks the 491 wait."""
        sent, rec.updating = rec.updating, None
        if sent is None:
            return "refused"
        if 200 <= status < 300:
            rec.held = sent
            if rec.wanted == sent:
                rec.wanted = None
            return "updated"
        if status == 491:
            rec.retry_at = now + 2.1 + 1.9 * min(max(jitter, 0.0), 1.0)
            return "retry"
        if status in (408, 481):
            return "gone"
        if rec.wanted == sent:
            rec.wanted = None  # not retried: the next change of the call tries again
        return "refused"

    def by_rs_call_id(self, rs_call_id: str) -> Recording | None:
        for rec in self.sessions.values():
            if rec.rs_call_id and rec.rs_call_id == rs_call_id:
                return rec
        return None

    def srs_ended(self, rec: Recording) -> bool:
        """The SRS sent BYE in the RS dialog (RFC 7866 §7.1.2): the recording is over,
        no BYE of ours; False when it was not active (nothing to end)."""
        if rec.state is not State.ACTIVE:
            return False
        rec.state = State.STOPPING
        return True

    def end(self, rec: Recording) -> None:
        if rec.state is not State.FAILED:
            rec.state = State.ENDED
        self.sessions.pop(rec.call_id, None)


def hold_rule(rec: Recording, offerer_tag: str, direction: str) -> tuple[str, ...] | None:
    """The RS streams on hold after a CS offer with `direction` (RFC 3264 §8.4, §6.1):
    `sendonly` from a party holds the other one's stream (it receives nothing), `recvonly`
    its own, `inactive` both, `sendrecv` none.  Label 1 is what the caller sends, 2 what
    the callee sends (session.subscribed); None for a direction that says nothing."""
    if len(rec.labels) < 2:
        return None
    mode = direction.strip().lower().removeprefix("a=")
    offerer_is_caller = not offerer_tag or not rec.from_tag or offerer_tag == rec.from_tag
    own, other = ("1", "2") if offerer_is_caller else ("2", "1")
    held = {"sendrecv": (), "sendonly": (other,), "recvonly": (own,),
            "inactive": ("1", "2")}.get(mode)
    if held is None:
        return None
    return tuple(sorted(held, key=int))


def _metadata(rec: Recording, held: Sequence[str]) -> str:
    """The complete (RFC 7865 §6.1.1) snapshot: a party on hold sends nothing (its
    participantstreamassoc has no <send> of a held stream, nor its peer a <recv>)."""
    caller, callee = two_party(rec.caller, rec.callee, rec.labels[:2])
    parties = tuple(
        Participant(p.aor, p.name, tuple(x for x in p.send if x not in held),
                    tuple(x for x in p.recv if x not in held)) for p in (caller, callee))
    return build_metadata(Snapshot(rec.call_id, rec.from_tag, rec.group, parties,
                                   rec.labels, rec.started))


def _sdp_version(sdp: str) -> int:
    for line in sdp.splitlines():
        if line.startswith("o="):
            fields = line.split(" ")
            if len(fields) >= 3 and fields[2].isdigit():
                return int(fields[2])
    return 0


def _host(uri: str) -> str:
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split("@", 1)[-1].split(";", 1)[0].split(">", 1)[0]


def _split(value: str) -> list[str]:
    """Top-level comma split of a header value (not inside <> or quotes)."""
    out: list[str] = []
    cur: list[str] = []
    depth, quoted = 0, False
    for ch in value:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth -= 1
        if ch == "," and depth == 0 and not quoted:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    out.append("".join(cur))
    return [o for o in out if o.strip()]


def _tag(value: str) -> str:
    tail = value.rsplit(">", 1)[-1]
    for param in tail.split(";")[1:]:
        key, _, val = param.partition("=")
        if key.strip().lower() == "tag":
            return val.strip()
    return ""


def _uri(value: str) -> str:
    value = _split(value)[0].strip() if value else ""
    if "<" in value:
        return value.split("<", 1)[1].split(">", 1)[0].strip()
    return value.split(";", 1)[0].strip()
