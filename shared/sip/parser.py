"""The SIP parser: bytes in, a checked `Request` or `Response` out (RFC 3261 §7, §18.3, §20).

The model (`message.py`) keeps headers as two parallel tuples and the routing fields read
eagerly; this module checks the bytes and hands the model the header tuples and routing
fields through the arguments of `Request` / `Response` after `body` (`keys`, `lines`, ...),
never writing the model's own fields.

* The datagram is cut once at the first empty line (`CRLF CRLF`); the header block is split
  at `CRLF`, each line at its first `:`. Lines that start with whitespace continue the line
  above (folding, RFC 3261 §7.3.1): they are unfolded into the value but the raw bytes are
  kept, so an untouched header serializes byte for byte, folding and odd spacing included.
  One pass maps every name to its key; a line it cannot map (folding, odd spacing, unknown
  names) sends the block through a careful pass. No regular expression. Compiled (mypyc),
  the names, the request and status lines and the routing values are read in place from
  int bytes (the in-place readers below), so a parse makes no bytes object it does not keep.
* Only what routing needs is interpreted here: the start line, Call-ID, CSeq, the From and
  To tags, Max-Forwards (None when absent, as from an RFC 2543 element), Content-Length, the
  header count (`limits.py`), and the presence of Via (RFC 4475's eager defects: missing or
  repeated single-value headers, unterminated quotes in From/To, CSeq range and method,
  Content-Length). The rest is parsed on demand by the model.
* Defects raise `SipParseError` carrying RFC 3261's answer: 400 for a malformed request, 505
  for another SIP version, "drop" (status None) for any malformed response (a response is
  never answered, RFC 3261 §18.1.2).
* Content-Length frames the body: larger than the datagram or conflicting values are a 400;
  a smaller one discards the surplus (RFC 3261 §18.3). The body is raw bytes (NULs allowed).
"""

from __future__ import annotations

from types import FunctionType
from typing import Final, cast

from shared.sip.cseq import CSeq, parse_cseq
from shared.sip.errors import SipParseError, bad_request
from shared.sip.headers import canonical_of_key
from shared.sip.limits import MAX_HEADER_LINES
from shared.sip.message import (
    _BACKSLASH,
    _COLON,
    _COMMA,
    _DQUOTE,
    _ENC,
    _ERR,
    _KEY_OF_BYTES,
    _LF,
    _NUL,
    _SEMI,
    _SP,
    _TAB,
    _TOKEN_CHARS,
    Request,
    Response,
    _dec,
    _line_value,
    _name_addr_tag,
    _new_cseq,
    _parse_max_forwards,
    _slow_key,
)
from shared.sip.status import REASON_PHRASES

_CR: Final = 13
_MANDATORY: Final = ("call-id", "from", "to", "cseq")  # fixed order: stable error texts
_ONCE_EACH: Final = [1, 1, 1, 1]


# -- parsing --------------------------------------------------------------------------------


def parse_message(data: bytes) -> Request | Response:
    """Parse one complete message (a datagram, or one message framed off a stream).

    Raises SipParseError with the RFC's answer for any defect; never anything else.
    """
    if type(data) is not bytes:
        data = bytes(data)
    end = data.find(b"\r\n\r\n")
    if end <= 0:
        return _parse_unusual(data)
    head = data[:end]
    lines = head.split(b"\r\n")  # as many CRLFs as lines less one
    if (_has_bare_cr(lines) if _COMPILED else head.count(b"\r") != len(lines) - 1) or (
            _NUL in head and head.count(b"\x00") != head.count(b"\\\x00")):
        # RFC 3261 §7.3.1, §25.1: no CR outside a CRLF, and a NUL only as a quoted-pair
        # (`\<NUL>` in a quoted string, RFC 4475 §3.1.1.3 intmeth), in the start line or a
        # header; such bytes would end up in headers a proxy writes back.  C-speed counts.
        detail = "NUL or bare CR in the header block"
        if head[:4] == b"SIP/":
            raise SipParseError(None, detail, "")
        raise bad_request(detail)
    start = lines[0]
    try:
        if start[:4] == b"SIP/":
            return _parse_response(start, lines, data[end + 4 :])
        if _COMPILED:
            # The fast request line below, read in place: no split list and parts, the
            # usual methods as shared str constants.
            uri_end = _request_line_end(start)
            raw: bytes | None = start
            if uri_end > 0:
                method_end = _method_end(start)
                method = _method_at(start, 0, method_end)
                uri = start[method_end + 1 : uri_end].decode()  # bad UTF-8 is a 400
            else:
                method, uri = _start_request(start)
                raw = None
            return _parse_headers(lines, data[end + 4 :], method, uri, 0, "", raw)
        # Fast request line: exactly `METHOD SP URI SP SIP/2.0`.
        parts = start.split(b" ")
        if (
            len(parts) == 3
            and parts[2] == b"SIP/2.0"
            and parts[0].isalpha()
            and _COLON in parts[1]
            and parts[1][0] != 60  # "<"
        ):
            method = parts[0].decode()
            uri = parts[1].decode()  # URIs are ASCII (RFC 3986 §2); bad UTF-8 is a 400
            raw = start  # what `serialize` writes back for this method and URI
        else:
            method, uri = _start_request(start)
            raw = None
        return _parse_headers(lines, data[end + 4 :], method, uri, 0, "", raw)
    except UnicodeDecodeError:
        raise bad_request("invalid UTF-8 in the Request-URI or a routing header") from None
    except (UnicodeError, ValueError, IndexError) as err:  # pragma: no cover - safety net
        raise bad_request(f"malformed message ({err})") from None


def _has_bare_cr(lines: list[bytes]) -> bool:
    """A CR left in a line of the header block split at its CRLFs: `count(b"\\r")` beyond
    the CRLFs, as the interpreted rendering asks it.  Compiled, that count was a byte loop
    over the whole block behind a generic method call (~2.5 k instructions per message,
    callgrind); `13 in line` is a `memchr` per line through the sequence slot."""
    for line in lines:
        if _CR in line:
            return True
    return False


def _parse_response(start: bytes, lines: list[bytes], body: bytes) -> Response:
    try:
        status = _status_line_code(start) if _COMPILED else -1
        # The line is written back as received when it is what `serialize` would write:
        # `SIP/2.0 ddd ` and the reason (a line without the space after the code gets one).
        raw: bytes | None = start
        if status > 0:
            reason = _reason_at(start, status)
            if len(start) < 12:
                raw = None
        else:
            status, reason = _start_response(start)
            if len(start) < 12 or start[11] != _SP or not start.startswith(_VERSION_SP):
                raw = None
        resp = cast(Response, _parse_headers(lines, body, None, "", status, reason, raw))
    except SipParseError as err:
        if err.status is not None:
            # A malformed response cannot be answered: drop it (RFC 3261 §18.1.2).
            raise SipParseError(None, err.detail, "") from None
        raise
    except (UnicodeError, ValueError, IndexError) as exc:  # pragma: no cover - safety net
        # A name of its own: compiled (mypyc), `err` keeps the type of the clause above.
        raise SipParseError(None, f"malformed response ({exc})", "") from None
    return resp


def _parse_unusual(data: bytes) -> Request | Response:
    """Leading CRLFs (ignored, RFC 3261 §7.5), bare-LF line ends, no empty line."""
    data = data.lstrip(b"\r\n")
    if not data:
        raise bad_request("empty message")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        return parse_message(data)
    # Bare-LF line ends are not SIP, but some stacks send them; accept them whole.
    end = data.find(b"\n\n")
    if end >= 0:
        head = data[:end]
        body = data[end + 2 :]
    else:
        # Without the empty line the header block is all there is (RFC 3261 §7 requires
        # it; tolerate it missing on a datagram that carries no body).
        head = data.rstrip(b"\r\n")
        body = b""
    return parse_message(head.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n\r\n" + body)


def _start_request(start: bytes) -> tuple[str, str]:
    """The method and Request-URI of a request line the fast path did not take."""
    parts = start.split(b" ")
    if len(parts) != 3:
        if _TAB in start:
            raise bad_request("tab in the request line (SP required)")
        if len(parts) > 3:
            raise bad_request("whitespace inside the Request-URI or extra spaces")
        raise bad_request(f"malformed request line {_dec(start[:80])!r}")
    method_b, uri_b, version = parts
    if not method_b:
        raise bad_request("empty method")
    if not method_b.isalpha():
        for byte in method_b:
            if byte not in _TOKEN_CHARS:
                raise bad_request(f"invalid method {_dec(method_b)!r}")
    if version != b"SIP/2.0":
        upper = version.upper()
        if upper != b"SIP/2.0":
            if upper.startswith(b"SIP/"):
                raise SipParseError(505, f"version {_dec(version)} not supported")
            raise bad_request(f"malformed SIP version {_dec(version[:20])!r}")
    if not uri_b:
        raise bad_request("empty Request-URI")
    if uri_b[0] == 60:  # "<"
        raise bad_request("Request-URI enclosed in <>")
    if _COLON not in uri_b:
        raise bad_request(f"Request-URI without scheme {_dec(uri_b[:80])!r}")
    return method_b.decode(_ENC, _ERR), uri_b.decode(_ENC, _ERR)


def _start_response(start: bytes) -> tuple[int, str]:
    version, sp, rest = start.partition(b" ")
    if not sp:
        raise SipParseError(None, "malformed status line", "")
    if version.upper() != b"SIP/2.0":
        raise SipParseError(None, f"version {_dec(version[:20])} not supported", "")
    code, _, reason = rest.partition(b" ")
    if len(code) != 3 or not code.isdigit():
        raise SipParseError(None, f"malformed status code {_dec(code[:20])!r}", "")
    status = int(code)
    if not 100 <= status <= 699:
        raise SipParseError(None, f"status code {status} outside 100-699", "")
    return status, reason.decode(_ENC, _ERR)


def _parse_headers(lines: list[bytes], body: bytes, method: str | None, uri: str, status: int,
                   reason: str, start_line: bytes | None) -> Request | Response:
    """The header block after the start line, checked, and the message built of it: a
    Request (`method`, `uri`) or, `method` None, a Response (`status`, `reason`);
    `start_line` the start line to write back as read, or None.

    Two renderings of the same checks, the same answers and errors: compiled (mypyc), int
    loops over bytes from known offsets are inline C and cheaper than any method called by
    name; interpreted, each loop step is bytecode and the C-level methods win.  The unit
    tests run against both (`SIPMESH_COMPILED=require` and `off`)."""
    if _COMPILED:
        return _parse_headers_indexed(lines, body, method, uri, status, reason, start_line)
    return _parse_headers_interpreted(lines, body, method, uri, status, reason, start_line)


def _parse_headers_interpreted(lines: list[bytes], body: bytes, method: str | None, uri: str,
                               status: int, reason: str, start_line: bytes | None
                               ) -> Request | Response:
    """`_parse_headers` as the interpreter runs it fastest: C-level bytes and tuple methods
    (`partition`, `count`, `index`) rather than loops over bytes."""
    del lines[0]  # the start line; what remains are the header lines
    raws = lines
    kget = _KEY_OF_BYTES.get
    # One C-speed pass maps each line's name to its key; anything unusual (folding, odd
    # spacing, unknown or malformed names) yields None and takes the careful path.
    keys = [kget(line.partition(b":")[0]) for line in raws]
    if None in keys:
        raws, keys_ok = _careful_headers(raws)
        # Values are read from unfolded copies; the raw lines (folds kept) are stored.
        src = [_unfold(line) if _LF in line else line for line in raws]
    else:
        keys_ok = keys  # type: ignore[assignment]
        src = raws
    if len(keys_ok) > MAX_HEADER_LINES:  # header fields, folded lines joined (limits.py)
        raise SipParseError(513, f"{len(keys_ok)} header fields (limit {MAX_HEADER_LINES})")
    keys_t = tuple(keys_ok)

    count = keys_t.count
    index = keys_t.index
    if list(map(count, _MANDATORY)) != _ONCE_EACH or "via" not in keys_t:
        _missing_or_several(keys_t)

    call_id = src[index("call-id")].partition(b":")[2].strip(b" \t")
    if not call_id or _COMMA in call_id or _SP in call_id or _TAB in call_id:
        raise bad_request(
            "empty Call-ID" if not call_id else "several values or whitespace in Call-ID"
        )
    call_id_text = call_id.decode()  # `word` characters only: bad UTF-8 is a 400

    value = src[index("cseq")].partition(b":")[2].strip(b" \t")
    num, sp, meth = value.partition(b" ")
    if sp and num.isdigit() and len(num) < 10 and meth.isalpha():
        cseq = _new_cseq(CSeq, (int(num), meth.decode()))
    else:
        cseq = parse_cseq(value.decode(_ENC, _ERR))
    # From/To tags, inline fast path for `[display] <uri>;...;tag=x` without quotes or
    # commas after the display name; anything else goes through `_tag_of`.
    value = src[index("from")].partition(b":")[2].strip(b" \t")
    i = value.rfind(b";tag=")
    quotes = value.count(b'"')
    if (
        i > value.rfind(b">")
        and _COMMA not in value
        and (quotes == 0 or (quotes == 2 and value[0] == _DQUOTE and _BACKSLASH not in value))
    ):
        tag = value[i + 5 :]
        from_tag = tag.decode() if _SEMI not in tag else _tag_of(value, "From")
    else:
        from_tag = _tag_of(value, "From")
    value = src[index("to")].partition(b":")[2].strip(b" \t")
    if _SEMI not in value and _DQUOTE not in value and _COMMA not in value:
        to_tag = None
    else:
        to_tag = _tag_of(value, "To")

    n = count("max-forwards")
    if n == 1:
        value = src[index("max-forwards")].partition(b":")[2].strip(b" \t")
        if value.isdigit() and len(value) < 3:
            max_forwards = int(value)
        else:
            max_forwards = _parse_max_forwards(value)
    elif n == 0:
        # A request without Max-Forwards is RFC 2543 style (RFC 4475 §3.4.1): a proxy accepts
        # it and adds one (RFC 3261 §16.3 step 3, §16.6 step 3); None tells it so.
        max_forwards = None
    else:
        raise bad_request("several values in single-value header Max-Forwards")

    if method is not None and cseq.method != method:
        raise bad_request(f"CSeq method {cseq.method} differs from request method {method}")

    key_cl = "content-length"
    n = count(key_cl)
    if n:
        if n == 1:
            value = src[index("content-length")].partition(b":")[2].strip(b" \t")
            length = int(value) if value.isdigit() and len(value) < 10 else _content_length({value})
        else:
            length = _content_length(
                {_line_value(r) for k, r in zip(keys_ok, raws, strict=True) if k == key_cl}
            )
        if length != len(body):
            if length > len(body):
                raise bad_request(
                    f"Content-Length {length} larger than the {len(body)} body bytes received"
                )
            body = body[:length]  # RFC 3261 §18.3: surplus bytes of a datagram are discarded
    if method is None:
        return Response(status, reason, (), body, start_line, keys_t, tuple(raws),
                        call_id_text, cseq, from_tag, to_tag, max_forwards)
    return Request(method, uri, (), body, start_line, keys_t, tuple(raws), call_id_text, cseq,
                   from_tag, to_tag, max_forwards)


def _parse_headers_indexed(lines: list[bytes], body: bytes, method: str | None, uri: str,
                           status: int, reason: str, start_line: bytes | None
                           ) -> Request | Response:
    """`_parse_headers` for the compiled core: index arithmetic and int byte tests."""
    del lines[0]  # the start line; what remains are the header lines
    raws = lines
    # One pass maps each line's name (up to its first colon, the whole line without one)
    # to its key; anything unusual (folding, odd spacing, unknown or malformed names)
    # maps to None and takes the careful path.  Index arithmetic and int byte tests,
    # which the compiled core runs inline, rather than `partition` per line.
    keys: list[str] = []
    for line in raws:
        n = len(line)
        end = 0
        while end < n and line[end] != _COLON:
            end += 1
        found = _name_key(line, end)
        if found is None:
            break
        keys.append(found)
    if len(keys) != len(raws):
        raws, keys = _careful_headers(raws)
        # Values are read from unfolded copies; the raw lines (folds kept) are stored.
        src = [_unfold(line) if _LF in line else line for line in raws]
    else:
        src = raws
    if len(keys) > MAX_HEADER_LINES:  # header fields, folded lines joined (limits.py)
        raise SipParseError(513, f"{len(keys)} header fields (limit {MAX_HEADER_LINES})")

    # Where the routing fields are, and how many of each, in one pass over the keys.
    i_call = i_from = i_to = i_cseq = i_mf = i_cl = -1
    n_call = n_from = n_to = n_cseq = n_via = n_mf = n_cl = 0
    i = 0
    for key in keys:
        if key == "via":
            n_via += 1
        elif key == "from":
            n_from += 1
            if i_from < 0:
                i_from = i
        elif key == "to":
            n_to += 1
            if i_to < 0:
                i_to = i
        elif key == "call-id":
            n_call += 1
            if i_call < 0:
                i_call = i
        elif key == "cseq":
            n_cseq += 1
            if i_cseq < 0:
                i_cseq = i
        elif key == "max-forwards":
            n_mf += 1
            if i_mf < 0:
                i_mf = i
        elif key == "content-length":
            n_cl += 1
            if i_cl < 0:
                i_cl = i
        i += 1
    keys_t = tuple(keys)
    if n_call != 1 or n_from != 1 or n_to != 1 or n_cseq != 1 or not n_via:
        _missing_or_several(keys_t)

    call_id = _value(src[i_call])
    if not call_id or _COMMA in call_id or _SP in call_id or _TAB in call_id:
        raise bad_request(
            "empty Call-ID" if not call_id else "several values or whitespace in Call-ID"
        )
    call_id_text = call_id.decode()  # `word` characters only: bad UTF-8 is a 400

    cseq = _cseq(src[i_cseq])
    line = src[i_from]
    start, stop = _bounds(line)
    from_tag = _from_tag(line, start, stop)
    line = src[i_to]
    start, stop = _bounds(line)
    to_tag = _to_tag(line, start, stop)

    if n_mf == 1:
        line = src[i_mf]
        start, stop = _bounds(line)
        number = _digits(line, start, stop)
        if 0 <= number and stop - start < 3:
            max_forwards: int | None = number
        else:
            max_forwards = _parse_max_forwards(line[start:stop])
    elif n_mf == 0:
        # A request without Max-Forwards is RFC 2543 style (RFC 4475 §3.4.1): a proxy accepts
        # it and adds one (RFC 3261 §16.3 step 3, §16.6 step 3); None tells it so.
        max_forwards = None
    else:
        raise bad_request("several values in single-value header Max-Forwards")

    if method is not None and cseq.method != method:
        raise bad_request(f"CSeq method {cseq.method} differs from request method {method}")

    if n_cl:
        if n_cl == 1:
            line = src[i_cl]
            start, stop = _bounds(line)
            length = _digits(line, start, stop) if stop - start < 10 else -1
            if length < 0:
                length = _content_length({line[start:stop]})
        else:
            key_cl = "content-length"
            length = _content_length(
                {_line_value(r) for k, r in zip(keys, raws, strict=True) if k == key_cl}
            )
        if length != len(body):
            if length > len(body):
                raise bad_request(
                    f"Content-Length {length} larger than the {len(body)} body bytes received"
                )
            body = body[:length]  # RFC 3261 §18.3: surplus bytes of a datagram are discarded
    if method is None:
        return Response(status, reason, (), body, start_line, keys_t, tuple(raws),
                        call_id_text, cseq, from_tag, to_tag, max_forwards)
    return Request(method, uri, (), body, start_line, keys_t, tuple(raws), call_id_text, cseq,
                   from_tag, to_tag, max_forwards)


def _value(line: bytes) -> bytes:
    """`line.partition(b":")[2].strip(b" \t")`, by index: one slice, no tuple."""
    n = len(line)
    i = 0
    while i < n and line[i] != _COLON:
        i += 1
    if i == n:
        return b""
    i += 1
    while i < n and (line[i] == _SP or line[i] == _TAB):
        i += 1
    while n > i and (line[n - 1] == _SP or line[n - 1] == _TAB):
        n -= 1
    return line[i:n]


# -- in-place readers (compiled rendering): what a slice and a dict or `split` would
# answer, read from int bytes at known offsets, so that a parse makes no bytes object it
# does not keep (names, request-line parts, routing values).

# The usual header names first: each header line's name is looked up in the list of its
# first byte, by length and then byte for byte.
_FREQUENT: Final = ("via", "from", "to", "call-id", "cseq", "contact", "max-forwards",
                    "content-length", "content-type", "record-route", "route")


def _build_name_table() -> tuple[list[list[bytes]], list[list[str]]]:
    """`_KEY_OF_BYTES` by first byte: the spellings, and their keys in parallel lists."""
    ordered = sorted(_KEY_OF_BYTES.items(), key=lambda item: (
        _FREQUENT.index(item[1]) if item[1] in _FREQUENT else len(_FREQUENT),
        item[0].decode() != canonical_of_key(item[1]), item[0]))
    spellings: list[list[bytes]] = [[] for _ in range(256)]
    keys: list[list[str]] = [[] for _ in range(256)]
    for spelling, key in ordered:
        spellings[spelling[0]].append(spelling)
        keys[spelling[0]].append(key)
    return spellings, keys


_NAME_SPELLINGS, _NAME_KEYS = _build_name_table()


def _name_key(line: bytes, end: int) -> str | None:
    """`_KEY_OF_BYTES.get(line[:end])`, without the slice."""
    if end <= 0:
        return None
    first = line[0]
    spellings = _NAME_SPELLINGS[first]
    for k in range(len(spellings)):
        spelling = spellings[k]
        if len(spelling) == end:
            j = 1
            while j < end and line[j] == spelling[j]:
                j += 1
            if j == end:
                return _NAME_KEYS[first][k]
    return None


_METHOD_SPELLINGS: Final = [b"INVITE", b"ACK", b"BYE", b"CANCEL", b"OPTIONS", b"REGISTER",
                            b"PRACK", b"UPDATE", b"INFO", b"SUBSCRIBE", b"NOTIFY", b"REFER",
                            b"MESSAGE", b"PUBLISH"]
_METHOD_TEXTS: Final = [spelling.decode() for spelling in _METHOD_SPELLINGS]


def _method_at(data: bytes, start: int, end: int) -> str:
    """`data[start:end].decode()` (ASCII letters), the usual methods as shared constants."""
    n = end - start
    for k in range(len(_METHOD_SPELLINGS)):
        spelling = _METHOD_SPELLINGS[k]
        if len(spelling) == n:
            j = 0
            while j < n and data[start + j] == spelling[j]:
                j += 1
            if j == n:
                return _METHOD_TEXTS[k]
    return data[start:end].decode()


_VERSION: Final = b"SIP/2.0"
_VERSION_SP: Final = b"SIP/2.0 "


def _method_end(start: bytes) -> int:
    """The position of the request line's first space (`_request_line_end` found it)."""
    i = 0
    while start[i] != _SP:
        i += 1
    return i


def _request_line_end(start: bytes) -> int:
    """Where the Request-URI ends (its space) when the request line is the fast path's
    `METHOD SP URI SP SIP/2.0` (split at SP into exactly three parts, the method ASCII
    letters, the URI with a colon and not starting with `<`); -1 otherwise."""
    n = len(start)
    i = 0
    while i < n:
        c = start[i]
        if not (65 <= c <= 90 or 97 <= c <= 122):
            break
        i += 1
    if i == 0 or i >= n or start[i] != _SP:
        return -1
    j = i + 1
    colon = False
    while j < n:
        c = start[j]
        if c == _SP:
            break
        if c == _COLON:
            colon = True
        j += 1
    if not colon or start[i + 1] == 60 or n - j != 8:  # "<"; " SIP/2.0"
        return -1
    k = 0
    while k < 7 and start[j + 1 + k] == _VERSION[k]:
        k += 1
    return j if k == 7 else -1


def _build_reason_table() -> tuple[list[bytes], list[str]]:
    spellings = [b""] * 600  # never matched: `_reason_at` compares non-empty reasons only
    texts = [""] * 600
    for status, phrase in REASON_PHRASES.items():
        if 100 <= status <= 699:
            spellings[status - 100] = phrase.encode()
            texts[status - 100] = phrase
    return spellings, texts


_REASON_SPELLINGS, _REASON_TEXTS = _build_reason_table()


def _status_line_code(start: bytes) -> int:
    """The status code of `SIP/2.0 ddd[ reason]` (`_start_response`'s answer for that
    shape, 100-699); -1 for anything else, which `_start_response` then reads."""
    n = len(start)
    if n < 11 or (n > 11 and start[11] != _SP) or start[7] != _SP:
        return -1
    k = 0
    while k < 7 and start[k] == _VERSION[k]:
        k += 1
    if k != 7:
        return -1
    status = 0
    for i in range(8, 11):
        c = start[i]
        if c < 48 or c > 57:
            return -1
        status = status * 10 + (c - 48)
    return status if 100 <= status <= 699 else -1


def _reason_at(start: bytes, status: int) -> str:
    """The reason phrase after `SIP/2.0 ddd `, decoded; the usual one as a shared str."""
    n = len(start)
    if n <= 12:
        return ""
    spelling = _REASON_SPELLINGS[status - 100]
    m = n - 12
    if len(spelling) == m:
        j = 0
        while j < m and start[12 + j] == spelling[j]:
            j += 1
        if j == m:
            return _REASON_TEXTS[status - 100]
    return start[12:].decode(_ENC, _ERR)


def _bounds(line: bytes) -> tuple[int, int]:
    """Where `_value(line)` is in `line`: (start, end), (n, n) without a colon."""
    n = len(line)
    i = 0
    while i < n and line[i] != _COLON:
        i += 1
    if i == n:
        return n, n
    i += 1
    while i < n and (line[i] == _SP or line[i] == _TAB):
        i += 1
    while n > i and (line[n - 1] == _SP or line[n - 1] == _TAB):
        n -= 1
    return i, n


def _digits(line: bytes, start: int, end: int) -> int:
    """The number `line[start:end]` spells in ASCII digits; -1 when empty or not all
    digits (`bytes.isdigit`)."""
    if start >= end:
        return -1
    num = 0
    i = start
    while i < end:
        c = line[i]
        if c < 48 or c > 57:
            return -1
        num = num * 10 + (c - 48)
        i += 1
    return num


def _cseq(line: bytes) -> CSeq:
    """CSeq `digits SP method` read in `line` where `_value(line)` is: inline for up to 9
    digits and an alphabetic method (the usual methods as shared str constants)."""
    start, n = _bounds(line)
    i = start
    num = 0
    while i < n:
        c = line[i]
        if c < 48 or c > 57:
            break
        num = num * 10 + (c - 48)
        i += 1
    if 0 < i - start < 10 and i < n - 1 and line[i] == _SP:
        j = i + 1
        while j < n:
            c = line[j]
            if not (65 <= c <= 90 or 97 <= c <= 122):
                break
            j += 1
        if j == n:
            return _new_cseq(CSeq, (num, _method_at(line, i + 1, n)))
    return parse_cseq(line[start:n].decode(_ENC, _ERR))


def _from_tag(value: bytes, start: int, n: int) -> str | None:
    """From's tag, the value being `value[start:n]` (a header line, read in place): inline
    for `[display] <uri>;...;tag=x` without commas, backslashes or quotes other than a
    leading display name's; anything else goes through `_tag_of`.

    One scan of int bytes finds what `rfind`/`count`/`in` would: the last `;tag=`, the
    last `>` and `;`, the quotes, commas and backslashes."""
    tag_at = gt = semi = -1
    quotes = 0
    comma = backslash = False
    k = start
    while k < n:
        c = value[k]
        if c < 63 or c == _BACKSLASH:
            if c == _SEMI:
                semi = k
                if (k + 4 < n and value[k + 1] == 116 and value[k + 2] == 97
                        and value[k + 3] == 103 and value[k + 4] == 61):  # "tag="
                    tag_at = k
            elif c == 62:  # ">"
                gt = k
            elif c == _DQUOTE:
                quotes += 1
            elif c == _COMMA:
                comma = True
            elif c == _BACKSLASH:
                backslash = True
        k += 1
    if tag_at > gt and not comma and semi == tag_at and (
            quotes == 0 or (quotes == 2 and value[start] == _DQUOTE and not backslash)):
        return value[tag_at + 5 : n].decode()
    return _tag_of(value[start:n], "From")


def _to_tag(value: bytes, start: int, n: int) -> str | None:
    """To's tag (None without one, as in an initial request), the value being
    `value[start:n]`: what `_tag_of` answers for a value without quotes or commas, in one
    scan of int bytes; anything else through it."""
    tag_at = gt = -1
    semi = False
    k = start
    while k < n:
        c = value[k]
        if c < 63:
            if c == _SEMI:
                semi = True
                if (k + 4 < n and (value[k + 1] | 32) == 116 and (value[k + 2] | 32) == 97
                        and (value[k + 3] | 32) == 103 and value[k + 4] == 61):  # any case
                    tag_at = k
            elif c == 62:  # ">"
                gt = k
            elif c == _DQUOTE or c == _COMMA:
                return _tag_of(value[start:n], "To")
        k += 1
    if not semi:
        return None  # no parameters: no tag (an initial request's To)
    if tag_at < 0 or tag_at < gt:  # no `;tag=`, or one inside <...>: the careful path
        return _tag_of(value[start:n], "To")
    first = tag_at + 5
    end = first
    while end < n and value[end] != _SEMI:
        end += 1
    while first < end and (value[first] == _SP or value[first] == _TAB):
        first += 1
    while end > first and (value[end - 1] == _SP or value[end - 1] == _TAB):
        end -= 1
    return value[first:end].decode(_ENC, _ERR)


def _missing_or_several(keys: tuple[str, ...]) -> None:
    # Mandatory headers (RFC 3261 §8.1.1): missing ones are a 400; several values of a
    # single-value header too (RFC 4475 §3.1.4.8 "multi01").
    for key in _MANDATORY:
        n = keys.count(key)
        if n == 0:
            raise bad_request(f"missing {canonical_of_key(key)}")
        if n > 1:
            raise bad_request(f"several values in single-value header {canonical_of_key(key)}")
    raise bad_request("missing Via")


def _tag_of(value: bytes, what: str) -> str | None:
    """From/To tag with a bytes fast path; anything unusual goes through `_name_addr_tag`.

    Eagerly this checks what RFC 4475 expects a 400 for (unterminated quoted string, several
    values); the rest of the name-addr syntax is checked when `from_addr`/`to_addr` is read.
    """
    rest = value
    if value[:1] == b'"':
        q = value.find(b'"', 1)
        if q > 0 and value.find(b"\\", 1, q) < 0:
            rest = value[q + 1 :]
    if _DQUOTE not in rest and _COMMA not in rest:
        low = rest.lower()
        i = low.rfind(b";tag=")
        if i < 0:
            if low.find(b"tag") < 0:
                return None
        elif i > rest.rfind(b">"):
            tag = rest[i + 5 :]
            j = tag.find(b";")
            return (tag if j < 0 else tag[:j]).strip(b" \t").decode(_ENC, _ERR)
    return _name_addr_tag(value.decode(_ENC, _ERR), what)


def _careful_headers(raws: list[bytes]) -> tuple[list[bytes], list[str]]:
    """Header lines with folding joined (RFC 3261 §7.3.1) and every name checked."""
    out_lines: list[bytes] = []
    out_keys: list[str] = []
    # Continuations are collected per header and joined once: a header folded over
    # thousands of lines must not cost quadratic copying.
    folds: list[bytes] = []
    for line in raws:
        first = line[:1]
        if first == b" " or first == b"\t":
            if not out_lines:
                raise bad_request("continuation line before the first header")
            # The raw line keeps the fold; `_line_value` joins it when the value is read.
            if not folds:
                folds.append(out_lines[-1])
            folds.append(line)
            continue
        if folds:
            out_lines[-1] = b"\r\n".join(folds)
            folds = []
        name, colon, _value = line.partition(b":")
        if not colon:
            if not line.strip():
                raise bad_request("empty line inside the header block")
            raise bad_request(f"header line without colon {_dec(line[:40])!r}")
        found = _KEY_OF_BYTES.get(name)
        out_keys.append(found if found is not None else _slow_key(name))
        out_lines.append(line)
    if folds:
        out_lines[-1] = b"\r\n".join(folds)
    return out_lines, out_keys


def _unfold(line: bytes) -> bytes:
    """A folded raw line as one line (RFC 3261 §7.3.1: the fold is equivalent to one SP)."""
    return b" ".join([part.strip() for part in line.split(b"\n")])


def _content_length(values: set[bytes]) -> int:
    if len(values) > 1:
        raise bad_request("conflicting Content-Length values")
    value = next(iter(values))
    if not value.isdigit():
        if value[:1] == b"-":
            raise bad_request(f"negative Content-Length {_dec(value[:20])}")
        raise bad_request(f"invalid Content-Length {_dec(value[:20])!r}")
    digits = value.lstrip(b"0") or b"0"
    if len(digits) > 10:
        raise bad_request(f"Content-Length {_dec(value[:20])}... out of range")
    return int(digits)


def _compiled() -> bool:
    return not isinstance(_compiled, FunctionType)


# This module runs compiled (mypyc) or as Python (shared/compiled.py); see _parse_headers.
_COMPILED: Final = _compiled()

__all__ = ["parse_message"]
