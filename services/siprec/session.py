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

The adapter (recorder.py) does the I/O and passes `now` in; the table never raises on
what a peer sends (a malformed answer is a failure of that SRS).
"""

from __future__ import annotations

import enum
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.siprec.body import label_sdp, media_count, multipart
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
                tried=[(str(s), int(c)) for s, c in doc["tried"]])
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
                "tried": [{"srs": s, "status": c} for s, c in self.tried]}


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
        caller, callee = two_party(rec.caller, rec.callee, rec.labels[:2])
        doc = build_metadata(Snapshot(rec.call_id, rec.from_tag, rec.group,
                                      (caller, callee), rec.labels, rec.started))
        content_type, body = multipart(rec.offer_sdp, doc, boundary)
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

    def end(self, rec: Recording) -> None:
        if rec.state is not State.FAILED:
            rec.state = State.ENDED
        self.sessions.pop(rec.call_id, None)


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
