"""The in-dialog requests the dialog service sends through an edge, sans-IO.

When a dialog times out or is ended (`dlg_end_dlg`, billing), its owner sends a BYE to
each side (OpenSIPS `dlg_end_dlg`, RFC 3261 §15.1.1), built from what the dialog keeps:

* towards the callee, as if the caller sent it: Request-URI = the callee's Contact (from
  the 2xx), Route = the callee-side route set, From = the INVITE's From (caller's tag),
  To = the INVITE's To with the callee's tag, CSeq = the caller's highest CSeq + 1;
* towards the caller, as if the callee sent it: Request-URI = the caller's Contact,
  Route = the caller-side route set, From/To swapped, CSeq = the callee's highest + 1.

§12.2.1.1: without a route set the request goes to the remote target; the edge sends it to
`next_hop` instead, the address the side's messages came from (a phone behind a NAT is
reached where it really is, as the edge reaches it for its own in-dialog requests).
"""

from __future__ import annotations

from dataclasses import dataclass

from services.dialog.model import Dialog


@dataclass(frozen=True)
class Outgoing:
    """One request for the edge's Uac API (contracts/proto/sipmesh/edge/v1/uac.proto)."""

    side: str  # "callee" or "caller"
    method: str
    ruri: str
    headers: tuple[tuple[str, str], ...]
    route: tuple[str, ...]
    next_hop: str


def hop_uri(hop: str) -> str:
    """`udp:192.0.2.1:5062` -> `sip:192.0.2.1:5062;transport=udp` ("" stays "")."""
    transport, sep, rest = hop.partition(":")
    if not sep or not rest:
        return ""
    return f"sip:{rest};transport={transport}"


def _with_tag(value: str, tag: str) -> str:
    if not tag or ";tag=" in value.replace(" ", "").lower():
        return value
    return f"{value};tag={tag}"


def bye_requests(d: Dialog, extra_headers: tuple[str, ...] = ()) -> list[Outgoing]:
    """The two BYEs that end `d` (callee first); see the module docstring."""
    extras: list[tuple[str, str]] = []
    for line in extra_headers:
        name, sep, value = line.partition(":")
        if sep and name.strip() and "\r" not in line and "\n" not in line:
            extras.append((name.strip(), value.strip()))
    caller_side = d.from_hdr
    callee_side = _with_tag(d.to_hdr, d.to_tag)
    common = (("Call-ID", d.callid), ("Max-Forwards", "70"))
    to_callee = Outgoing(
        "callee", "BYE", d.callee_contact or d.ruri,
        (("From", caller_side), ("To", callee_side), *common,
         ("CSeq", f"{d.caller_cseq + 1} BYE"), *extras),
        d.callee_route, hop_uri(d.callee_hop) if not d.callee_route else "")
    to_caller = Outgoing(
        "caller", "BYE", d.caller_contact,
        (("From", callee_side), ("To", caller_side), *common,
         ("CSeq", f"{max(d.callee_cseq, 0) + 1} BYE"), *extras),
        d.caller_route, hop_uri(d.caller_hop) if not d.caller_route else "")
    return [to_callee, to_caller]


def cancel_request(d: Dialog) -> Outgoing:
    """dlg_end_dlg on an early dialog: the edge holding the INVITE cancels its branches as if
    the caller had sent the CANCEL (RFC 3261 §9.1, §16.10); the caller gets 487."""
    return Outgoing("callee", "CANCEL", d.ruri,
                    (("Call-ID", d.callid), ("From", d.from_hdr), ("To", d.to_hdr),
                     ("CSeq", f"{d.caller_cseq} CANCEL")), (), "")
