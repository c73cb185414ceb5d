"""OpenSIPS rtpengine flag strings -> rtpengine ng command dictionaries (pure).

OpenSIPS 2.4's `rtpengine_offer/answer/delete(flags)` take a space-separated list of
tokens and `key=value` pairs and turn it into the ng dictionary (modules/rtpengine,
`parse_flags` and `rtpe_function_call`); a script written for OpenSIPS gives the same
string here and rtpengine gets the same dictionary:

| flag | ng key |
|---|---|
| `replace-origin`, `replace-session-connection` | `replace: [...]` (offer/answer only) |
| `ICE=force\\|force-relay\\|remove` | `ICE` |
| `RTP/AVP`, `RTP/SAVP[F]`, `RTP/AVPF`, `UDP/TLS/RTP/SAVP[F]`, `SRTP`... | `transport-protocol` |
| `in-iface=X out-iface=Y`, `internal`, `external` | `direction: [in, out]` (both needed) |
| `address-family=IP4\\|IP6` | `address family` |
| `rtcp-mux-offer\\|demux\\|accept\\|reject\\|require` | `rtcp-mux: [...]` |
| `repacketize=N`, `delete-delay=N` | integers |
| `via-branch=1\\|2\\|auto` | `via-branch` = that Via's branch of the SIP message |
| `to-tag` | send the To tag with `delete` too (by default only offer/answer send it) |
| `force-answer` | turns an offer into an answer |
| any other token | appended to `flags` (e.g. `trust-address`, `symmetric`, `strict-source`) |
| any other `key=value` | passed as a dictionary entry unchanged (e.g. `label=caller`) |

Tags (2.4's rule): for a request (other than an answer, i.e. ACK) and for a reply's
answer or delete, `from-tag` is the From tag and `to-tag` the To tag; otherwise (the
answer carried by an ACK, the offer carried by a 2xx to an INVITE without SDP) they are
swapped, because the other party made that SDP.  `received-from` is the SIP message's
source address.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

COMMANDS = ("offer", "answer", "delete", "query", "ping")

_TRANSPORTS = ("RTP/AVP", "RTP/SAVP", "RTP/AVPF", "RTP/SAVPF", "UDP/TLS/RTP/SAVP",
               "UDP/TLS/RTP/SAVPF")
_NAMED_TRANSPORTS = {name: 0x100 | i for i, name in enumerate(_TRANSPORTS)}
_RTCP_MUX = {"rtcp-mux-offer": "offer", "rtcp-mux-demux": "demux",
             "rtcp-mux-accept": "accept", "rtcp-mux-reject": "reject",
             "rtcp-mux-require": "require"}


class FlagError(ValueError):
    """A flag string OpenSIPS would refuse (missing or invalid value); the message says which."""


@dataclass(frozen=True, slots=True)
class SipFacts:
    """What the command needs from the SIP message (the edge sends these)."""

    call_id: str
    from_tag: str
    to_tag: str = ""
    reply: bool = False  # the SDP is in a response
    received_from: str = ""  # source IP of the SIP message
    via_branches: tuple[str, ...] = ()  # top Via first


@dataclass(slots=True)
class _Parsed:
    dict: dict[str, Any] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    replace: list[str] = field(default_factory=list)
    rtcp_mux: list[str] = field(default_factory=list)
    transport: int = 0
    via: str = ""
    to: bool = True
    in_iface: str = ""
    out_iface: str = ""


def _tokens(flags: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for token in flags.split():
        key, sep, value = token.partition("=")
        out.append((key, value if sep else None))
    return out


def parse_flags(flags: str, command: str) -> tuple[str, _Parsed]:
    """The flag string for `command` -> (command, possibly changed by `force-answer`;
    the parsed pieces).  FlagError for what OpenSIPS refuses."""
    p = _Parsed(to=command != "delete")
    offer_answer = command in ("offer", "answer")
    for key, value in _tokens(flags):
        if key == "ICE":
            if value is None:
                raise FlagError("ICE: missing value")
            if value not in ("force", "force-relay", "remove"):
                raise FlagError(f"ICE: invalid value {value!r}")
            p.dict["ICE"] = value
        elif key == "RTP" and value is None:
            p.transport = (p.transport | 0x100) & ~0x001
        elif key == "AVP" and value is None:
            p.transport = (p.transport | 0x100) & ~0x002
        elif key == "SRTP" and value is None:
            p.transport |= 0x101
        elif key == "AVPF" and value is None:
            p.transport |= 0x102
        elif key in _NAMED_TRANSPORTS and value is None:
            p.transport = _NAMED_TRANSPORTS[key]
        elif key == "to-tag" and value is None:
            p.to = True
        elif key == "internal" and value is None:
            p.in_iface = key
        elif key == "external" and value is None:
            p.out_iface = key
        elif key == "in-iface":
            p.in_iface = value or ""
        elif key == "out-iface":
            p.out_iface = value or ""
        elif key == "via-branch":
            if value is None:
                raise FlagError("via-branch: missing value")
            if value[:1] not in ("1", "2") and value != "auto":
                raise FlagError(f"via-branch: invalid value {value!r} (1, 2 or auto)")
            p.via = value[:1] if value != "auto" else value
        elif key == "repacketize":
            digits = "".join(c for c in (value or "") if c.isdigit())
            if value is None:
                raise FlagError("repacketize: missing value")
            if not digits or int(digits) == 0:
                raise FlagError(f"repacketize: invalid value {value!r}")
            p.dict["repacketize"] = int(digits)
        elif key == "force-answer" and value is None:
            if command != "offer":
                raise FlagError("force-answer: cannot force answer in non-offer command")
            command = "answer"
        elif key == "delete-delay":
            if value is None:
                raise FlagError("delete-delay: missing value")
            try:
                delay = int(value)
            except ValueError:
                raise FlagError(f"delete-delay: invalid value {value!r}") from None
            if delay == 0:
                raise FlagError("delete-delay: invalid value 0")
            p.dict["delete-delay"] = delay
        elif key == "media-address" and value is None:
            raise FlagError("media-address: missing value")
        elif key in ("replace-origin", "replace-session-connection") and value is None:
            if offer_answer:  # OpenSIPS ignores them for other commands
                p.replace.append(key.removeprefix("replace-"))
        elif key == "address-family":
            if value is None:
                raise FlagError("address-family: missing value")
            if value not in ("IP4", "IP6"):
                raise FlagError(f"address-family: invalid value {value!r}")
            p.dict["address family"] = value
        elif key in _RTCP_MUX and value is None:
            p.rtcp_mux.append(_RTCP_MUX[key])
        elif value is None:
            p.flags.append(key)
        else:
            p.dict[key] = value
    if bool(p.in_iface) != bool(p.out_iface):
        raise FlagError("in-iface needs out-iface (and the other way round)")
    return command, p


def build_command(command: str, facts: SipFacts, flags: str = "", sdp: str | None = None
                  ) -> dict[str, Any]:
    """The ng dictionary for `command` about the SIP message `facts` (see the module
    docstring); FlagError for a bad flag string, or a message the command cannot use."""
    if command not in COMMANDS:
        raise FlagError(f"unknown command {command!r}")
    if command == "ping":
        return {"command": "ping"}
    if not facts.call_id:
        raise FlagError("no Call-ID")
    if not facts.from_tag:
        raise FlagError("no From tag")
    command, p = parse_flags(flags, command)
    d = p.dict
    if command in ("offer", "answer"):
        if sdp is None:
            raise FlagError(f"{command} needs an SDP body")
        d["sdp"] = sdp
    if p.in_iface:
        d["direction"] = [p.in_iface, p.out_iface]
    if p.flags:
        d["flags"] = p.flags
    if p.replace:
        d["replace"] = p.replace
    if p.transport & 0x100:
        d["transport-protocol"] = _TRANSPORTS[p.transport & 0x007]
    if p.rtcp_mux:
        d["rtcp-mux"] = p.rtcp_mux
    d["call-id"] = facts.call_id
    if p.via:
        index = (2 if facts.reply else 1) if p.via == "auto" else int(p.via)
        if len(facts.via_branches) < index or not facts.via_branches[index - 1]:
            raise FlagError(f"via-branch={p.via}: the message has no such Via branch")
        d["via-branch"] = facts.via_branches[index - 1]
    if facts.received_from:
        family = "IP6" if ":" in facts.received_from else "IP4"
        d["received-from"] = [family, facts.received_from]
    if _own_tags(command, facts.reply):
        d["from-tag"] = facts.from_tag
        if p.to and facts.to_tag:
            d["to-tag"] = facts.to_tag
    else:
        if not facts.to_tag:
            raise FlagError("no To tag")
        d["from-tag"] = facts.to_tag
        d["to-tag"] = facts.from_tag
    d["command"] = command
    return d


def _own_tags(command: str, reply: bool) -> bool:
    """2.4: `(request && op != answer) || (reply && op in (delete, answer))` keeps the
    message's tags; the other cases are SDP made by the To side."""
    if not reply:
        return command != "answer"
    return command in ("delete", "answer")


def flag_list(flags: str | Sequence[str]) -> str:
    """Flags given as a list are joined: `["replace-origin", "ICE=remove"]`."""
    return flags if isinstance(flags, str) else " ".join(flags)
