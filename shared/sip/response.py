"""Building a response to a request (RFC 3261 §8.2.6).

RFC 3261 §8.2.6.2: the response copies every Via (in order), From, To, Call-ID and CSeq of
the request; a To tag is added when the request's To has none (a UAS answering outside a
dialog, §8.2.6.2 "MUST add a tag" except for 100 Trying); a 100 also copies Timestamp
(§8.2.6.1). The copied lines are the request's
raw bytes, so what the client sent comes back byte for byte (RFC 3261 §17.1.3 matches on the
top Via branch; §8.1.3.3 on Call-ID/tags).
"""

from __future__ import annotations

from collections.abc import Iterable

from shared.sip.headers import canonical_of_key
from shared.sip.message import (
    Request,
    Response,
    _check_value,
    _enc,
    _key,
)

_COPIED = ("via", "from", "to", "call-id", "cseq")


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    headers: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to `request` with the headers of RFC 3261 §8.2.6.2 copied over."""
    if not 100 <= status <= 699:
        raise ValueError(f"status {status} outside 100-699")
    keys: list[str] = []
    lines: list[bytes] = []
    src_keys = request._keys
    src_lines = request._lines
    add_tag = to_tag is not None and request.to_tag is None
    # §8.2.6.1: a 100 (Trying) copies the request's Timestamp too.
    for key in _COPIED if status != 100 else (*_COPIED, "timestamp"):
        n = src_keys.count(key)
        if n == 1:  # the usual case: found by the C-level index, no Python loop
            line = src_lines[src_keys.index(key)]
            if key == "to" and add_tag:
                line = line + b";tag=" + _enc(to_tag or "")
            keys.append(key)
            lines.append(line)
        elif n:
            for i, k in enumerate(src_keys):
                if k == key:
                    line = src_lines[i]
                    if key == "to" and add_tag:
                        line = line + b";tag=" + _enc(to_tag or "")
                    keys.append(key)
                    lines.append(line)
    for name, value in headers:
        _check_value(value)
        key = _key(name)
        keys.append(key)
        lines.append(_enc(f"{canonical_of_key(key)}: {value}"))
    to = request.to_tag
    resp = Response(status, reason, (), body, None, tuple(keys), tuple(lines), request.call_id,
                    request.cseq, request.from_tag, to if to is not None else to_tag)
    if "max-forwards" in keys:
        resp._refresh("max-forwards")
    return resp


__all__ = ["make_response"]
