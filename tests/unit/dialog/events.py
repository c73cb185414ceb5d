"""Builders of the edge's dialog events (dialog.proto messages) for the unit tests."""

from __future__ import annotations

from typing import Any

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb

EDGE = "10.0.0.1:5060"


def create(callid: str = "c1", from_tag: str = "ft", *, timeout: int = 0,
           profiles: tuple[tuple[str, str | None], ...] = (), tag: str = "",
           extra: dict[str, str] | None = None, no_cdr: bool = False) -> Any:
    c = pb.Create(
        callid=callid, from_tag=from_tag,
        from_hdr=f"\"Alice\" <sip:alice@a.example>;tag={from_tag}",
        to_hdr="<sip:bob@b.example>", ruri="sip:bob@b.example", cseq=1,
        contact="sip:alice@192.0.2.1:5062", source="udp:192.0.2.1:5062",
        socket=f"udp:{EDGE}", destination="sip:bob@192.0.2.2:5064", edge_addrs=[EDGE],
        edge_uac="127.0.0.1:7000", timeout=timeout, timeout_set=timeout > 0,
        sharing_tag=tag, no_cdr=no_cdr)
    for name, value in profiles:
        c.profiles.add(name=name, value=value or "", has_value=value is not None)
    if extra:
        c.extra.update(extra)
    return c


def reply(status: int, callid: str = "c1", from_tag: str = "ft", to_tag: str = "tt",
          reason: str = "", record_route: tuple[str, ...] = ()) -> Any:
    return pb.Reply(callid=callid, from_tag=from_tag, to_tag=to_tag, status=status,
                    reason=reason or {180: "Ringing", 200: "OK", 486: "Busy Here",
                                      487: "Request Terminated"}.get(status, ""),
                    contact="sip:bob@192.0.2.2:5064", record_route=list(record_route),
                    source="udp:192.0.2.2:5064")


def request(method: str, callid: str = "c1", from_tag: str = "ft", to_tag: str = "tt",
            cseq: int = 2) -> Any:
    return pb.InDialog(callid=callid, from_tag=from_tag, to_tag=to_tag, method=method,
                       cseq=cseq)
