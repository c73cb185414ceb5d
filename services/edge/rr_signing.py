"""Signed Record-Route: knowing, on the way back, that a dialog was record-routed here.

A proxy that forwards every request carrying its own Route (RFC 3261 §16.4, loose routing)
is an open relay: anyone can put the proxy's URI on top of a preloaded route set, or make
up a To tag, and have the proxy forward to any host and port.  So the URI this edge puts in
a Record-Route carries a MAC, parameter `sg`, keyed with a secret every edge of the mesh
shares (`[edge] rr_secret`, else `auth_secret`, else a key kept in the state directory):

    sg = MAC(Call-ID, tag, target)        (keyed BLAKE2b, 80 bits, hex)

`tag` is the From tag of the request that created the dialog, and `target` the host:port
of the remote target the in-dialog requests travelling over that route set are sent to:

* in the forwarded request (the Record-Route the callee keeps, RFC 3261 §12.1.1), the
  caller's Contact, where the callee's requests go;
* in the 1xx/2xx relayed back (the route set of the caller, §12.1.2), the callee's Contact,
  where the caller's requests go: RFC 3261 §16.7 step 4 lets a proxy rewrite its own
  Record-Route value in a response.

An in-dialog request that comes back on that route set carries the value in its Route (or,
from a strict router, in its Request-URI).  It is in a dialog of this mesh when `sg` is the
MAC of its Call-ID, the original From tag (its From tag from the caller, its To tag from
the callee) and its Request-URI's host:port.  A made-up To tag, a copied Route aimed at
another target, or another Call-ID do not verify, and the request then needs what any
relayed request needs (a trusted source or a digest answer).  A dialog whose remote target
changes (a target refresh) no longer verifies for that side; its requests are then
authorised like any other.

The parameter also tells our Record-Route URIs apart from a phone's outbound-proxy Route
that merely names this edge: only a Request-URI with `sg` came from a strict router
(RFC 3261 §16.4).  Sans-IO: no clock, no sockets.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Final

from shared.sip import Request, Response, SipParseError, parse_name_addr

PARAM = "sg"  # the URI parameter holding the signature
_ENC = "surrogateescape"  # header text may carry any byte: hash it as received
KEEP: Final = 2048  # signatures remembered; cleared when full (bounded, cheaper than an LRU)


def target_of(host: str, port: int | None, scheme: str = "sip") -> str:
    """The host:port a URI sends to, as signed (host lower-cased, default port filled in)."""
    default = 5061 if scheme == "sips" else 5060
    return f"{host.strip('[]').lower()}:{default if port is None else port}"


class RecordRouteSigner:
    """The MAC of a dialog's Record-Route.  The last few thousand signatures are kept: one
    dialog asks for the same one several times in a row (its 1xx and 2xx are re-signed for
    the callee's Contact, the caller's ACK is verified against it), and a dictionary
    lookup costs a tenth of a keyed BLAKE2b; the answers are the same."""

    __slots__ = ("_known", "_mac")

    def __init__(self, secret: bytes) -> None:
        if not secret:
            raise ValueError("the Record-Route secret must not be empty")
        key = secret if len(secret) <= 64 else hashlib.blake2b(secret).digest()
        self._mac = hashlib.blake2b(key=key, digest_size=10, person=b"sipmesh-rr")
        self._known: dict[str, str] = {}

    def sign(self, call_id: str, tag: str, target: str) -> str:
        text = f"{call_id}\x00{tag}\x00{target}"
        known = self._known
        signature = known.get(text)
        if signature is None:
            mac = self._mac.copy()
            mac.update(text.encode("utf-8", _ENC))
            signature = mac.hexdigest()
            if len(known) >= KEEP:
                known.clear()
            known[text] = signature
        return signature

    def verify(self, signature: str, call_id: str, tags: tuple[str | None, ...],
               target: str) -> bool:
        """True when `signature` signs this Call-ID, one of `tags`, and `target`."""
        if not signature.isascii() or len(signature) != 20:
            return False
        for tag in tags:
            if tag is not None and hmac.compare_digest(signature,
                                                       self.sign(call_id, tag, target)):
                return True
        return False


class ResponseResigner:
    """Re-signs our Record-Route values in the 1xx/2xx going back to the caller.

    The caller's requests go to the callee's Contact, so that is the target its route set
    is signed for (RFC 3261 §16.7 step 4 lets a proxy rewrite its own Record-Route value in
    a response).  Everything needed is in the response: its Call-ID, its From tag (the
    caller's) and its Contact; a response without a Contact gets a signature that never
    verifies, which only costs its in-dialog requests an authorisation check.

    Our values are found by the text this edge wrote (`prefixes`: `<sip:HOST:PORT...;sg=`,
    one per interface), which a UAS copies unchanged (§12.1.1), so no Record-Route is
    parsed; the Contact's target is remembered per Contact text.  Measured: this kept the
    cost per relayed response to a few microseconds."""

    __slots__ = ("_targets", "prefixes", "signer")

    def __init__(self, signer: RecordRouteSigner, prefixes: tuple[str, ...]) -> None:
        self.signer = signer
        self.prefixes = prefixes
        self._targets: dict[str, str] = {}

    def __call__(self, response: Response) -> str | None:
        """Re-sign our values in `response`'s Record-Route; the new header value when it
        changed (the values joined by ", "), None otherwise."""
        values = response.get_all("Record-Route")
        if not values:
            return None
        signature = ""
        out: list[str] = []
        changed = False
        for value in values:
            for prefix in self.prefixes:
                if value.startswith(prefix):
                    cut = len(prefix)
                    if value[cut + 20:cut + 21] == ">":
                        if not signature:
                            signature = self.sign(response)
                        value = prefix + signature + value[cut + 20:]
                        changed = True
                    break
            out.append(value)
        if not changed:
            return None
        joined = ", ".join(out)
        response.set_header("Record-Route", joined)
        return joined

    def sign(self, message: Request | Response) -> str:
        """The signature for `message`'s dialog and its (first) Contact's target: the
        callee's in a response, the caller's in the request that creates the dialog."""
        contact = message.get("Contact") or ""
        target = self._targets.get(contact)
        if target is None:
            target = ""
            try:
                uri = parse_name_addr(contact, "Contact").uri if contact else None
            except SipParseError:
                uri = None
            if uri is not None and uri.host:
                target = target_of(uri.host, uri.port, uri.scheme)
            if len(self._targets) >= 4096:
                self._targets.clear()  # bounded
            self._targets[contact] = target
        return self.signer.sign(message.call_id, message.from_tag or "", target)
