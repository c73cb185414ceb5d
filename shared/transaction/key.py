"""Transaction keys: how a message finds its transaction (RFC 3261 §17.1.3, §17.2.3, §9.2).

Client side (§17.1.3): a response matches the client transaction whose request carried the
same top-Via `branch`, and whose method equals the CSeq method of the response (a CANCEL and
the INVITE it cancels share a branch but are two transactions).

Server side (§17.2.3): when the top-Via branch starts with the magic cookie `z9hG4bK`, the
key is (branch, sent-by host, sent-by port, method) where ACK is folded onto INVITE so the
ACK for a non-2xx response finds its INVITE transaction.  Otherwise (RFC 2543 peers) the key
is built from Request-URI, From tag, Call-ID, CSeq number and the whole top Via; To tags
are checked separately by the transaction (the ACK carries the tag of the response, the
INVITE may carry none).  A CANCEL is matched against the INVITE it cancels (§9.2) by asking
for the same key with method INVITE.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.sip import Request, Response, Via

MAGIC_COOKIE = "z9hG4bK"

ClientKey = tuple[str, str]
ServerKey = tuple[str, ...]


def _default_port(transport: str) -> int:
    return 5061 if transport.upper() in ("TLS", "WSS") else 5060


def sent_by(via: Via) -> tuple[str, int]:
    """The sent-by of a Via with the default port filled in (§18.2.2, §19.1.2)."""
    return via.host.lower(), via.port if via.port is not None else _default_port(via.transport)


def client_key(branch: str, method: str) -> ClientKey:
    """Key of a client transaction created for a request with this branch and method."""
    return (branch, method)


def client_key_of_response(response: Response) -> ClientKey | None:
    """§17.1.3: (top Via branch, CSeq method) of a response; None when it has no branch."""
    branch = response.top_via.branch
    if not branch:
        return None
    return (branch, response.cseq.method)


def server_key(request: Request, method: str | None = None) -> ServerKey:
    """§17.2.3 key of the server transaction `request` belongs to.

    `method` overrides the request's method: ACK is folded onto INVITE here already, and
    CANCEL matching (§9.2) asks for the INVITE key of a CANCEL.
    """
    m = method or request.method
    if m == "ACK":
        m = "INVITE"
    via = request.top_via
    branch = via.branch
    if branch and branch.startswith(MAGIC_COOKIE):
        host, port = sent_by(via)
        return (branch, host, str(port), m)
    # RFC 2543 fallback (§17.2.3, last paragraphs): no usable branch.
    return (
        "2543",
        request.uri,
        request.from_tag or "",
        request.call_id,
        str(request.cseq.number),
        m,
        str(via),
    )


def is_rfc3261_branch(branch: str | None) -> bool:
    return bool(branch) and branch.startswith(MAGIC_COOKIE)  # type: ignore[union-attr]
