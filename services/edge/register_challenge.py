"""The 401 of a REGISTER without credentials, on its own short path (issue 22), sans-IO.

Every refresh of every phone starts with a REGISTER that carries no credentials and gets
a stateless 401 (services/edge/default_routing.py `_register`, RFC 3261 §8.2.7, §22.4).
On the generic path that REGISTER is validated header by header (Contact, Expires, ...),
checked by §16.3 (a loop hash of it), given a `RouteContext`, routed by the script, and
answered by a `Response` built and serialized.  `RegisterChallenger.answer` does what that
401 needs and no more, and the core (`ProxyCore._on_request`) calls it after everything
a stateless answer shares with the generic path: the received/rport stamp, the
retransmission and draining checks, the anycast decision; pike admitted the datagram
before the core saw it (services/edge/app.py).

It answers only when the generic path would send the same 401, else None (the generic
path runs, unchanged):

- the routing script is the default one (`default_routing.request_route` itself: an
  operator's script, even one wrapping it, sees every request as before);
- the script's own conditions for its stateless challenge: a registrar known and
  reachable, `[edge] register_auth` on, an auth service; a Request-URI of a local domain
  or of this proxy; no Authorization, no Route (the script treats preloaded routes as a
  relay), no To tag;
- §16.3 as the core checks it: a sip/sips Request-URI without headers, Max-Forwards not
  0 (483), no Proxy-Require (420), no loop (482: only possible with a Via of ours below
  the top one, so only checked when there are several Vias);
- RFC 3261 syntax of what the 401 uses: the Request-URI, every Via (copied), From and To
  (copied; the realm is the To host).  Call-ID and CSeq are checked by the parser.

The one documented difference: headers the 401 neither reads nor copies (Contact,
Expires, ...) are not validated here, so a REGISTER without credentials whose Contact is
malformed gets its 401 and the credentialed retry its 400 (where the generic path
answered that first REGISTER 400).  Kamailio and OpenSIPS behave the same (`www_challenge`
runs before `save`).  The registrar never sees a REGISTER that did not pass the full
validation.

The 401's bytes are built from the request's lines (Via, From, To with our tag, Call-ID,
CSeq, copied as `make_response` copies them) and are the same bytes the generic path
sends: tests/unit/edge/test_edge_register_challenge.py compares both for a set of
REGISTERs.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from typing import Any

from services.edge.validation import SUPPORTED_SCHEMES, is_loop, loop_hash
from shared.sip import Request, Uri, ValidatedLines
from shared.sip.limits import MAX_ROUTING_VALUES

_STATUS_LINE = b"SIP/2.0 401 Unauthorized\r\n"
_AUTHENTICATE = b"WWW-Authenticate: "
_TAIL = b"Content-Length: 0\r\n\r\n"
_CRLF = b"\r\n"
_COMMA = b","
_COPIED = ("from", "to", "call-id", "cseq")  # after the Vias, as make_response orders them
_FROM_TO = frozenset({"from", "to"})


class RegisterChallenger:
    """The default script's stateless 401 to a REGISTER without credentials."""

    def __init__(self, services: Mapping[str, Any], local_domains: Collection[str],
                 is_myself: Callable[[Uri], bool]) -> None:
        from services.edge import default_routing

        # The caller answers only while its routing hook is this one (the default script).
        self.hook: object = default_routing.request_route
        self.services = services
        self.local_domains = local_domains
        self.is_myself = is_myself

    def answer(self, request: Request, ours: Collection[tuple[str, int]],
               tag_of: Callable[[Request], str | None],
               known: ValidatedLines | None = None) -> bytes | None:
        """The 401's bytes (the To tag `tag_of(request)`, as the generic path's), or None
        when the generic path must decide.  Raises
        SipParseError (answered 400 by the core, as on the generic path) for a malformed
        part the 401 uses."""
        services = self.services
        registrar = services.get("registrar")
        auth = services.get("auth")
        if (registrar is None or auth is None or not registrar.available
                or not registrar.register_auth):
            return None
        if (request.has("authorization") or request.has("route")
                or request.has("proxy-require") or request.to_tag is not None):
            return None
        uri = request.parsed_uri
        if uri.headers or uri.scheme not in SUPPORTED_SCHEMES:
            return None  # 400 / 416: the generic path says which
        mf = request.max_forwards
        if mf is not None and mf <= 0:
            return None  # 483
        if not (uri.host.lower() in self.local_domains or self.is_myself(uri)):
            return None
        lines = request._lines
        keys = request._keys
        # The lines the 401 copies, by header, in one pass (make_response's order: every
        # Via, then From, To, Call-ID, CSeq, each header's lines in wire order).
        vias: list[bytes] = []
        copied: dict[str, list[bytes]] = {"from": [], "to": [], "call-id": [], "cseq": []}
        for key, line in zip(keys, lines):  # noqa: B905 (one length by construction)
            if key == "via":
                vias.append(line)
            else:
                found = copied.get(key)
                if found is not None:
                    found.append(line)
        if not vias:
            return None  # (the core parsed the top Via already: not reached)
        if len(vias) > 1 or _COMMA in vias[0]:
            # Vias below the top one (parsed by the core already): every one parsed, as
            # they are copied; a Via of ours among them may mean a loop.
            parsed = request.vias
            if len(parsed) > MAX_ROUTING_VALUES or is_loop(request, loop_hash(request), ours):
                return None  # 513 / 482
        request.from_addr  # noqa: B018 - parsed: copied into the 401
        domain = request.to_addr.uri.host.lower()
        if known is not None:
            # Parsed as `validate` parses them: the credentialed REGISTER that follows
            # repeats both lines and does not parse them again (it parses the Contact,
            # which the generic path's validation of this one would have remembered).
            known.vouch(request, _FROM_TO)
        tag = b";tag=" + (tag_of(request) or "").encode("utf-8", "surrogateescape")
        out = [_STATUS_LINE]
        for line in vias:
            out.append(line)
            out.append(_CRLF)
        for name in _COPIED:
            for line in copied[name]:
                out.append(line + tag if name == "to" else line)
                out.append(_CRLF)
        for challenge in auth.challenges(domain, False, registrar.algorithms):
            out.append(_AUTHENTICATE)
            out.append(challenge.encode("utf-8", "surrogateescape"))
            out.append(_CRLF)
        out.append(_TAIL)
        return b"".join(out)


__all__ = ["RegisterChallenger"]
