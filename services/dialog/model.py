"""One dialog as the dialog service keeps it, and its wire/storage form.

A `Dialog` is a plain record with `__slots__` (the service holds 100,000 of them in a few
hundred MB: see the README's figures). Its identity is `(Call-ID, caller's From tag)`,
the dialog-forming INVITE's; the callee's To tag joins with the first reply that has one.
OpenSIPS numbers dialogs by hash entry and id (`dlg_list`'s ID, `dlg_end_dlg h_entry
h_id`): here both are hashes of the identity, so every node of a cluster gives a
replicated dialog the same numbers without asking anyone.

`to_record` / `from_record` convert to and from the protobuf `DialogRecord`
(contracts/proto/sipmesh/dialog/v1/dialog.proto), the form replicated between nodes
(capability `dialog-dlg-repl`) and stored in the dialog table.

Route sets (RFC 3261 §12.1.1/§12.1.2): the 2xx of the INVITE carries every Record-Route
value, the hop nearest the callee first. The edge's own values (matched by host:port
against the addresses it announced in the Create event) split the list: the values above
them are the hops between the edge and the callee - reversed, they are the route set of a
request the edge sends to the callee; the values below them, in order, are the route set
towards the caller.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Sequence
from typing import Any

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb
from services.dialog.states import State

HASH_SIZE = 4096  # OpenSIPS dialog hash_size default: h_entry is in [0, 4096)

Key = tuple[str, str]  # (Call-ID, caller's From tag)
ProfileLink = tuple[str, str | None]  # (profile name, value or None for a no-value profile)


def hash_entry(callid: str) -> int:
    return zlib.crc32(callid.encode()) % HASH_SIZE


def hash_id(callid: str, from_tag: str) -> int:
    """31 bits of the identity: the same on every node (OpenSIPS counts per entry)."""
    return zlib.crc32(f"{from_tag}\x00{callid}".encode()) & 0x7FFFFFFF


def dialog_id(h_entry: int, h_id: int) -> int:
    """The numeric dialog ID of `dlg_list` (OpenSIPS: h_entry << 32 | h_id)."""
    return (h_entry << 32) + h_id


class Dialog:
    """One tracked dialog (see the module docstring); field meanings as DialogRecord."""

    __slots__ = (
        "answered_ms", "callee_contact", "callee_cseq", "callee_hop", "callee_route",
        "caller_contact", "caller_cseq", "caller_hop", "caller_route", "callid", "cdr_done",
        "counted", "created_ms", "destination", "edge_addrs", "edge_uac", "end_reason",
        "ended_ms", "extra", "from_hdr", "from_tag", "h_entry", "h_id", "hold_until_ms",
        "no_cdr", "packed", "profiles", "reserved", "ruri", "sharing_tag", "sip_code", "sip_reason",
        "socket", "source", "state", "timeout", "to_hdr", "to_tag", "version", "writer",
    )

    def __init__(self, callid: str, from_tag: str) -> None:
        self.callid = callid
        self.from_tag = from_tag
        self.to_tag = ""
        self.h_entry = hash_entry(callid)
        self.h_id = hash_id(callid, from_tag)
        self.state = State.UNCONFIRMED
        self.version = 0
        self.writer = 0
        self.from_hdr = ""
        self.to_hdr = ""
        self.ruri = ""
        self.caller_contact = ""
        self.callee_contact = ""
        self.caller_route: tuple[str, ...] = ()
        self.callee_route: tuple[str, ...] = ()
        self.caller_hop = ""
        self.callee_hop = ""
        self.caller_cseq = 0
        self.callee_cseq = 0
        self.socket = ""
        self.source = ""
        self.destination = ""
        self.edge_addrs: tuple[str, ...] = ()
        self.edge_uac = ""
        self.created_ms = 0
        self.answered_ms = 0
        self.ended_ms = 0
        self.timeout = 0
        self.profiles: tuple[ProfileLink, ...] = ()
        self.extra: dict[str, str] | None = None
        self.sharing_tag = ""
        self.sip_code = 0
        self.sip_reason = ""
        self.end_reason = ""
        self.no_cdr = False
        self.cdr_done = False
        self.reserved = False
        self.hold_until_ms = 0
        self.counted = False  # in the profile counts of this node's table (not replicated)
        # The record's bytes as last encoded or received (None: changed since). A full sync
        # sends these as they are: encoding 100,000 records on the donor cost ~0.9 s.
        self.packed: bytes | None = None

    @property
    def key(self) -> Key:
        return (self.callid, self.from_tag)

    @property
    def id(self) -> int:
        return dialog_id(self.h_entry, self.h_id)

    @property
    def deadline_ms(self) -> int:
        """When the lifetime ends (0: no lifetime, or not answered)."""
        if not self.answered_ms or self.timeout <= 0:
            return 0
        return self.answered_ms + self.timeout * 1000

    def rank(self) -> tuple[bool, bool, int, int]:
        """Which of two copies of a dialog wins a merge: a written CDR, then an ended
        dialog, beat everything (an end is never undone by a concurrent update elsewhere),
        then the higher version, then the higher writer node."""
        return (self.cdr_done, self.state is State.DELETED, self.version, self.writer)

    def __repr__(self) -> str:
        return f"Dialog({self.callid!r}, {self.from_tag!r}, state={int(self.state)})"


# -- route sets --------------------------------------------------------------------------------

def _host_port(value: str) -> str | None:
    """host:port of a Record-Route value's URI (port 5060 when absent), lower-cased."""
    start = value.find("<")
    uri = value[start + 1:value.find(">", start)] if start >= 0 else value.split(";", 1)[0]
    _scheme, sep, rest = uri.partition(":")
    if not sep:
        return None
    rest = rest.split(";", 1)[0].split("?", 1)[0]
    if "@" in rest:
        rest = rest.rsplit("@", 1)[1]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else "5060"
    else:
        host, _, port = rest.partition(":")
        port = port or "5060"
    return f"{host.lower()}:{port}"


def split_route_sets(record_route: Sequence[str], edge_addrs: Iterable[str]
                     ) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(route set towards the callee, route set towards the caller), both first hop first,
    from the Record-Route values of the 2xx (see the module docstring). Without a value
    of the edge's own (the edge did not record-route) every hop counts as the callee's."""
    ours = {a.lower() for a in edge_addrs}
    mine = [i for i, v in enumerate(record_route) if _host_port(v) in ours]
    if not mine:
        return tuple(reversed(record_route)), ()
    first, last = mine[0], mine[-1]
    return tuple(reversed(record_route[:first])), tuple(record_route[last + 1:])


# -- wire form ---------------------------------------------------------------------------------

def to_record(d: Dialog) -> Any:
    rec = pb.DialogRecord(
        callid=d.callid, from_tag=d.from_tag, to_tag=d.to_tag, h_entry=d.h_entry, h_id=d.h_id,
        state=int(d.state), version=d.version, writer=d.writer, from_hdr=d.from_hdr,
        to_hdr=d.to_hdr, ruri=d.ruri, caller_contact=d.caller_contact,
        callee_contact=d.callee_contact, caller_route=d.caller_route,
        callee_route=d.callee_route, caller_hop=d.caller_hop, callee_hop=d.callee_hop,
        caller_cseq=d.caller_cseq, callee_cseq=d.callee_cseq, socket=d.socket,
        source=d.source, destination=d.destination, edge_addrs=d.edge_addrs,
        edge_uac=d.edge_uac, created_ms=d.created_ms, answered_ms=d.answered_ms,
        ended_ms=d.ended_ms, timeout=d.timeout, sharing_tag=d.sharing_tag,
        sip_code=d.sip_code, sip_reason=d.sip_reason, end_reason=d.end_reason,
        no_cdr=d.no_cdr, cdr_done=d.cdr_done, reserved=d.reserved,
        hold_until_ms=d.hold_until_ms)
    for name, value in d.profiles:
        rec.profiles.add(name=name, value=value or "", has_value=value is not None)
    if d.extra:
        rec.extra.update(d.extra)
    return rec


_STATES = {int(state): state for state in State}
_new = Dialog.__new__


def from_record(rec: Any) -> Dialog:
    """A Dialog from its record. Written out field by field on a bare instance: a full
    sync applies 100,000 of these, and going through `Dialog.__init__` (defaults, two
    hashes the record already carries) cost ~45% more per record (measured)."""
    d = _new(Dialog)
    d.callid = rec.callid
    d.from_tag = rec.from_tag
    d.to_tag = rec.to_tag
    d.h_entry = rec.h_entry
    d.h_id = rec.h_id
    d.state = _STATES[rec.state]
    d.version = rec.version
    d.writer = rec.writer
    d.from_hdr = rec.from_hdr
    d.to_hdr = rec.to_hdr
    d.ruri = rec.ruri
    d.caller_contact = rec.caller_contact
    d.callee_contact = rec.callee_contact
    r = rec.caller_route
    d.caller_route = tuple(r) if r else ()
    r = rec.callee_route
    d.callee_route = tuple(r) if r else ()
    d.caller_hop = rec.caller_hop
    d.callee_hop = rec.callee_hop
    d.caller_cseq = rec.caller_cseq
    d.callee_cseq = rec.callee_cseq
    d.socket = rec.socket
    d.source = rec.source
    d.destination = rec.destination
    r = rec.edge_addrs
    d.edge_addrs = tuple(r) if r else ()
    d.edge_uac = rec.edge_uac
    d.created_ms = rec.created_ms
    d.answered_ms = rec.answered_ms
    d.ended_ms = rec.ended_ms
    d.timeout = rec.timeout
    r = rec.profiles
    d.profiles = tuple((p.name, p.value if p.has_value else None) for p in r) if r else ()
    r = rec.extra
    d.extra = dict(r) if r else None
    d.sharing_tag = rec.sharing_tag
    d.sip_code = rec.sip_code
    d.sip_reason = rec.sip_reason
    d.end_reason = rec.end_reason
    d.no_cdr = rec.no_cdr
    d.cdr_done = rec.cdr_done
    d.reserved = rec.reserved
    d.hold_until_ms = rec.hold_until_ms
    d.counted = False
    d.packed = None
    return d


def encode(d: Dialog) -> bytes:
    """The record's bytes, kept on the dialog (`packed`) for the next full sync."""
    data: bytes = to_record(d).SerializeToString()
    d.packed = data
    return data


def decode(data: bytes, _record: Any = pb.DialogRecord) -> Dialog:
    rec = _record()
    rec.ParseFromString(data)
    d = from_record(rec)
    d.packed = data
    return d
