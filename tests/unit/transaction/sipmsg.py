"""Tiny builders of SIP messages for the transaction and edge unit tests."""

from __future__ import annotations

from shared.sip import Request, Response, parse_message


def request(method: str = "INVITE", *, branch: str = "z9hG4bKtest1", uri: str = "sip:bob@b.example",
            via_host: str = "10.0.0.1", via_port: int = 5060, to_tag: str | None = None,
            cseq: int = 1, cseq_method: str | None = None, call_id: str = "call-1",
            extra: str = "", transport: str = "UDP", max_forwards: int | None = 70) -> Request:
    to = "<sip:bob@b.example>" + (f";tag={to_tag}" if to_tag else "")
    bparam = f";branch={branch}" if branch else ""
    mf = f"Max-Forwards: {max_forwards}\r\n" if max_forwards is not None else ""
    text = (
        f"{method} {uri} SIP/2.0\r\n"
        f"Via: SIP/2.0/{transport} {via_host}:{via_port}{bparam}\r\n"
        f"{mf}From: <sip:alice@a.example>;tag=from1\r\nTo: {to}\r\n"
        f"Call-ID: {call_id}\r\nCSeq: {cseq} {cseq_method or method}\r\n{extra}"
        f"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Request)
    return msg


def response_to(req: Request, status: int, *, to_tag: str | None = "uas1",
                vias: list[str] | None = None) -> Response:
    via_lines = "".join(f"Via: {v}\r\n" for v in (vias or req.get_all("Via")))
    to = req.get("To") or ""
    if to_tag and ";tag=" not in to:
        to += f";tag={to_tag}"
    text = (
        f"SIP/2.0 {status} Reason\r\n{via_lines}From: {req.get('From')}\r\nTo: {to}\r\n"
        f"Call-ID: {req.call_id}\r\nCSeq: {req.cseq.number} {req.cseq.method}\r\n"
        f"Content-Length: 0\r\n\r\n"
    )
    msg = parse_message(text.encode())
    assert isinstance(msg, Response)
    return msg
