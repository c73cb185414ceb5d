"""Recording metadata (RFC 7865), sans-IO: the XML the SRC sends and a strict reader.

The document (namespace `urn:ietf:params:xml:ns:recording:1`, RFC 7865 §6/§9): a
`<recording>` with `<datamode>complete</datamode>` (§6.1.1: a full snapshot, not a
partial update), a `<group>` (§6.3, the CS group: calls recorded together, e.g. one
`group=` of `ctx.record`), the recorded `<session>` (§6.4) with its `<group-ref>`, one
`<participant>` per party (§6.5: `<nameID aor=...>` with an optional `<name>`), one
`<stream>` per recorded media stream (§6.6: `<label>` = the SDP `a=label` of its m-line,
RFC 7866 §8.1.1), and the associations (§6.7-6.9): `<sessionrecordingassoc>`,
`<participantsessionassoc>` and `<participantstreamassoc>` (`<send>`/`<recv>` stream ids)
with `<associate-time>` (xs:dateTime, UTC).  Identifiers are UUIDs in base64 (§6.10);
here they are name-based (UUID v5) over the call and the role, so the ids of a call are
the same in every document about it (an update or another node re-sending them).

`parse_metadata` is the SRS side: it reads a document, checks that every reference
resolves (a stream's session, an association's participant, session and streams) and
returns what it says; MetadataError otherwise.  The tests' SRS uses it.
"""

from __future__ import annotations

import base64
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from xml.sax.saxutils import escape, quoteattr

NS = "urn:ietf:params:xml:ns:recording:1"
_NAMESPACE = uuid.UUID("3f6d0a4e-6c1b-5a3e-9d55-7365727265c7")  # SipMesh SIPREC ids


class MetadataError(ValueError):
    """A metadata document RFC 7865 does not allow (or whose references do not resolve)."""


def make_id(*parts: str) -> str:
    """A §6.10 identifier: a UUID (v5 over `parts`) in base64."""
    return base64.b64encode(uuid.uuid5(_NAMESPACE, "\x00".join(parts)).bytes).decode()


def timestamp(epoch: float) -> str:
    """xs:dateTime in UTC (§6.7 associate-time)."""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Participant:
    aor: str
    name: str = ""
    send: tuple[str, ...] = ()  # labels of the streams this party sends
    recv: tuple[str, ...] = ()  # labels of the streams it receives


@dataclass(frozen=True)
class Snapshot:
    """What one document says: the call, its parties, its streams (labels)."""

    call_id: str
    from_tag: str
    group: str
    participants: tuple[Participant, ...]
    labels: tuple[str, ...]
    started: float  # epoch seconds: the associate-time of everything


def build_metadata(snap: Snapshot) -> str:
    """The complete (§6.1.1) metadata document of `snap`."""
    key = (snap.call_id, snap.from_tag)
    group_id = make_id("group", snap.group or snap.call_id)
    session_id = make_id("session", *key)
    at = f"<associate-time>{timestamp(snap.started)}</associate-time>"
    stream_ids = {label: make_id("stream", *key, label) for label in snap.labels}
    out = ['<?xml version="1.0" encoding="UTF-8"?>', f'<recording xmlns="{NS}">',
           "  <datamode>complete</datamode>",
           f"  <group group_id={quoteattr(group_id)}>{at}</group>",
           f"  <session session_id={quoteattr(session_id)}>",
           f"    <group-ref>{escape(group_id)}</group-ref>", "  </session>"]
    part_ids = []
    for index, party in enumerate(snap.participants):
        pid = make_id("participant", *key, str(index), party.aor)
        part_ids.append(pid)
        name = f"<name>{escape(party.name)}</name>" if party.name else ""
        out.append(f"  <participant participant_id={quoteattr(pid)}>"
                   f"<nameID aor={quoteattr(party.aor)}>{name}</nameID></participant>")
    for label in snap.labels:
        out.append(f"  <stream stream_id={quoteattr(stream_ids[label])} "
                   f"session_id={quoteattr(session_id)}><label>{escape(label)}</label>"
                   "</stream>")
    out.append(f"  <sessionrecordingassoc session_id={quoteattr(session_id)}>{at}"
               "</sessionrecordingassoc>")
    for pid, party in zip(part_ids, snap.participants, strict=True):
        out.append(f"  <participantsessionassoc participant_id={quoteattr(pid)} "
                   f"session_id={quoteattr(session_id)}>{at}</participantsessionassoc>")
        refs = [f"<send>{stream_ids[lb]}</send>" for lb in party.send if lb in stream_ids]
        refs += [f"<recv>{stream_ids[lb]}</recv>" for lb in party.recv if lb in stream_ids]
        out.append(f"  <participantstreamassoc participant_id={quoteattr(pid)}>"
                   f"{''.join(refs)}</participantstreamassoc>")
    out.append("</recording>")
    return "\n".join(out) + "\n"


# -- the SRS side ------------------------------------------------------------------------------
@dataclass
class ParsedParticipant:
    participant_id: str
    aor: str
    name: str
    send: list[str] = field(default_factory=list)  # labels
    recv: list[str] = field(default_factory=list)


@dataclass
class Parsed:
    datamode: str
    group_ids: list[str]
    session_ids: list[str]
    participants: list[ParsedParticipant]
    labels: dict[str, str]  # stream_id -> label
    associated_sessions: list[str]

    def participant(self, aor: str) -> ParsedParticipant:
        for p in self.participants:
            if p.aor == aor:
                return p
        raise KeyError(aor)


def _q(tag: str) -> str:
    return f"{{{NS}}}{tag}"


def _need(elem: ET.Element, attr: str) -> str:
    value = elem.get(attr)
    if not value:
        raise MetadataError(f"<{elem.tag.split('}')[-1]}> without {attr}")
    return value


def parse_metadata(text: str | bytes) -> Parsed:
    """Read an RFC 7865 document (see the module docstring)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise MetadataError(f"not XML: {exc}") from None
    if root.tag != _q("recording"):
        raise MetadataError(f"root is {root.tag}, not {{{NS}}}recording")
    mode = root.findtext(_q("datamode"), "")
    if mode not in ("complete", "partial"):
        raise MetadataError(f"datamode {mode!r}")  # §6.1.1
    groups = [_need(g, "group_id") for g in root.findall(_q("group"))]
    sessions: list[str] = []
    for s in root.findall(_q("session")):
        sessions.append(_need(s, "session_id"))
        for ref in s.findall(_q("group-ref")):
            if (ref.text or "") not in groups:
                raise MetadataError(f"group-ref {ref.text!r} names no group")
    participants: dict[str, ParsedParticipant] = {}
    for p in root.findall(_q("participant")):
        pid = _need(p, "participant_id")
        name_id = p.find(_q("nameID"))
        if name_id is None:
            raise MetadataError("participant without nameID")  # §6.5
        participants[pid] = ParsedParticipant(pid, _need(name_id, "aor"),
                                              name_id.findtext(_q("name"), ""))
    labels: dict[str, str] = {}
    for st in root.findall(_q("stream")):
        sid = _need(st, "stream_id")
        if _need(st, "session_id") not in sessions:
            raise MetadataError(f"stream {sid} names an unknown session")
        label = st.findtext(_q("label"))
        if not label:
            raise MetadataError(f"stream {sid} without label")  # §6.6
        labels[sid] = label
    associated = []
    for a in root.findall(_q("sessionrecordingassoc")):
        sid = _need(a, "session_id")
        if sid not in sessions:
            raise MetadataError("sessionrecordingassoc names an unknown session")
        associated.append(sid)
    for a in root.findall(_q("participantsessionassoc")):
        if _need(a, "participant_id") not in participants or _need(
                a, "session_id") not in sessions:
            raise MetadataError("participantsessionassoc with an unknown reference")
    for a in root.findall(_q("participantstreamassoc")):
        pid = _need(a, "participant_id")
        if pid not in participants:
            raise MetadataError("participantstreamassoc names an unknown participant")
        for kind in ("send", "recv"):
            for ref in a.findall(_q(kind)):
                if (ref.text or "") not in labels:
                    raise MetadataError(f"<{kind}> {ref.text!r} names no stream")
                getattr(participants[pid], kind).append(labels[ref.text or ""])
    return Parsed(mode, groups, sessions, list(participants.values()), labels, associated)


def two_party(caller: Participant, callee: Participant,
              labels: Sequence[str]) -> tuple[Participant, Participant]:
    """A two-party call's parties with their streams: `labels[0]` the caller sends (the
    callee receives), `labels[1]` the reverse."""
    a, b = labels[0], labels[1]
    return (Participant(caller.aor, caller.name, (a,), (b,)),
            Participant(callee.aor, callee.name, (b,), (a,)))
