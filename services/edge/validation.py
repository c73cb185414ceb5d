"""§16.3 request validation of the edge proxy, sans-IO.

`check(request, is_myself, ours)` decides whether a request that is not part of a running
transaction may go on to routing, in the order of RFC 3261 §16.3:

* step 2, URI scheme: only `sip:` and `sips:` are proxied, 416 otherwise (and the bad-URI
  counter, OpenSIPS `bad_URIs_rcvd`);
* step 3, Max-Forwards: an OPTIONS with Max-Forwards 0, or addressed to the proxy itself
  with no user part and no Route, is answered by the proxy (§11: 200 with Allow, Accept,
  Supported); any other request with Max-Forwards 0 gets 483;
* step 4, loop detection: one of our own Vias whose branch carries this request's loop
  hash (§16.6 step 8, `loop_hash`) means the request came back unchanged: 482;
* step 5, Proxy-Require: every option tag is unsupported here: 420 with Unsupported
  (not for ACK or CANCEL, §16.3 step 5).

It answers a `Refusal` (or None) and the loop hash the forwarded branches carry.  The core
answers the refusal on a fresh server transaction, or drops it for an ACK, which is never
answered (§17.1.1.3).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Collection
from typing import NamedTuple

from shared.sip import Request, Uri
from shared.transaction import sent_by

ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, REGISTER, SUBSCRIBE, NOTIFY, REFER, INFO, UPDATE, " \
    "PRACK, MESSAGE, PUBLISH"
SUPPORTED_SCHEMES = frozenset({"sip", "sips"})
_OPTIONS_ANSWER = (("Allow", ALLOW), ("Accept", "application/sdp"), ("Supported", ""))


class Refusal(NamedTuple):
    """The answer §16.3 requires instead of routing (dropped for an ACK)."""

    status: int
    headers: tuple[tuple[str, str], ...] = ()
    bad_uri: bool = False  # counted as a bad Request-URI (OpenSIPS `bad_URIs_rcvd`)


def check(request: Request, is_myself: Callable[[Uri], bool],
          ours: Collection[tuple[str, int]]) -> tuple[Refusal | None, str]:
    """§16.3 steps 2-5 on a validated request: (the refusal or None, the loop hash)."""
    method = request.method
    uri = request.parsed_uri
    if uri.scheme not in SUPPORTED_SCHEMES:
        return Refusal(416, bad_uri=True), ""
    mf = request.max_forwards
    addressed_to_us = is_myself(uri) and not request.has("Route")
    if method == "OPTIONS" and (mf == 0 or (addressed_to_us and not uri.user)):
        # §16.3 step 3 / §11: the proxy answers OPTIONS that cannot (or need not) go on.
        return Refusal(200, _OPTIONS_ANSWER), ""
    if mf is not None and mf <= 0:
        return Refusal(483), ""
    hashed = loop_hash(request)
    if is_loop(request, hashed, ours):
        return Refusal(482), hashed
    if method not in ("ACK", "CANCEL"):
        required = [v.strip() for v in request.get_all("Proxy-Require") if v.strip()]
        if required:
            return Refusal(420, (("Unsupported", ", ".join(required)),)), hashed
    return None, hashed


def loop_hash(request: Request) -> str:
    """§16.6 step 8: a hash of what makes this request what it is, for loop detection.

    The topmost Via that §16.6 lists is left out on purpose: when the request comes back
    the top Via is another hop's (or ours), so with it no loop would ever be detected
    (the weakness RFC 5393 §3 discusses).  A spiral changes the Request-URI and so the
    hash, and is not mistaken for a loop.
    """
    parts = (
        request.to_tag or "", request.from_tag or "", request.call_id, request.uri,
        str(request.cseq.number), request.get("Proxy-Require") or "",
        request.get("Proxy-Authorization") or "",
    )
    return hashlib.md5("\x00".join(parts).encode("utf-8", "surrogateescape")
                       ).hexdigest()[:16]


def is_loop(request: Request, hashed: str, ours: Collection[tuple[str, int]]) -> bool:
    """§16.3 step 4: our Via with the same hash means the request came back unchanged."""
    vias = request.get_all("Via")
    if len(vias) < 2:
        return False  # only the sender's Via: we never forwarded this request
    prefix = f"z9hG4bK{hashed}."
    if not any(prefix in value for value in vias):
        return False  # cheap text check first: parsing every Via costs more
    for via in request.vias:
        if sent_by(via) in ours and (via.branch or "").startswith(prefix):
            return True
    return False


__all__ = ["ALLOW", "SUPPORTED_SCHEMES", "Refusal", "check", "is_loop", "loop_hash"]
