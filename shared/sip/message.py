"""SIP messages: parsing bytes into a Request or Response and serializing them back.

How it works (RFC 3261 §7, §18.3, §20):

* The datagram is cut once at the first empty line (`CRLF CRLF`); the header block is split
  at `CRLF`, each line at its first `:`. Lines that start with whitespace continue the line
  above (folding, RFC 3261 §7.3.1): they are unfolded into the value but the raw bytes are
  kept, so an untouched header serializes byte for byte, folding and odd spacing included.
* Each header is stored as a tuple `(key, raw_line, value)` in wire order; `key` is the
  lower-case canonical name (compact forms expanded), `value` the unfolded, stripped bytes.
  An index maps each key to its tuples. No regular expression is involved.
* Only what routing needs is interpreted eagerly: the start line, Call-ID, CSeq, the From and
  To tags, Max-Forwards, Content-Length, and the presence of Via. Everything else (Via
  values, the Request-URI, Contact, Route, ...) is parsed on demand and cached. `validate()`
  parses everything this package models, for a linter or a strict element.
* Defects raise `SipParseError` carrying RFC 3261's answer: 400 for a malformed request, 505
  for another SIP version, "drop" (status None) for any malformed response (a response is
  never answered, RFC 3261 §18.1.2).
* Content-Length frames the body: larger than the datagram or conflicting values are a 400;
  a smaller one discards the surplus (RFC 3261 §18.3). The body is raw bytes (NULs allowed).
* `serialize()` writes the start line, every header line as stored, and a Content-Length that
  always matches the body (added when missing, rewritten when wrong).

Header values are decoded as UTF-8 with `surrogateescape`, so any byte sequence round-trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Final, Self

from shared.sip.cseq import CSeq, parse_cseq
from shared.sip.errors import SipParseError, bad_request
from shared.sip.headers import (
    CANONICAL_NAMES,
    COMPACT_FORMS,
    LIST_HEADERS,
    SINGLE_VALUE_HEADERS,
    canonical_of_key,
    find_quote_end,
    header_key,
    parse_params,
    split_top_level,
)
from shared.sip.nameaddr import NameAddr, parse_name_addr
from shared.sip.status import reason_phrase
from shared.sip.uri import Uri, parse_uri
from shared.sip.via import Via, parse_via

_Field = tuple[str, bytes, bytes]  # (key, raw line, unfolded stripped value)

_ENC: Final = "utf-8"
_ERR: Final = "surrogateescape"
_TOKEN_CHARS: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_EAGER: Final = SINGLE_VALUE_HEADERS
_MANDATORY: Final = ("call-id", "from", "to", "cseq")  # fixed order: stable error texts


def _build_key_tables() -> tuple[dict[bytes, str], dict[str, str]]:
    by_bytes: dict[bytes, str] = {}
    by_str: dict[str, str] = {}
    for key, canon in CANONICAL_NAMES.items():
        for spelling in (canon, key, key.upper()):
            by_bytes[spelling.encode()] = key
            by_str[spelling] = key
    for short, key in COMPACT_FORMS.items():
        for spelling in (short, short.upper()):
            by_bytes[spelling.encode()] = key
            by_str[spelling] = key
    return by_bytes, by_str


_KEY_OF_BYTES, _KEY_OF_STR = _build_key_tables()


def _key(name: str) -> str:
    key = _KEY_OF_STR.get(name)
    return key if key is not None else header_key(name)


def _slow_key(name: bytes) -> str:
    stripped = name.strip(b" \t")
    if not stripped:
        raise bad_request("empty header name")
    for byte in stripped:
        if byte not in _TOKEN_CHARS:
            raise bad_request(f"invalid header name {stripped.decode(_ENC, 'replace')!r}")
    key = _KEY_OF_BYTES.get(stripped)
    if key is not None:
        return key
    lowered = stripped.decode("ascii").lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _dec(value: bytes) -> str:
    return value.decode(_ENC, _ERR)


def _enc(value: str) -> bytes:
    return value.encode(_ENC, _ERR)


def _check_value(value: str) -> None:
    if "\r" in value or "\n" in value or "\0" in value:
        raise ValueError("a header value must not contain CR, LF or NUL")


def _name_addr_tag(text: str, what: str) -> str | None:
    """The `tag` header parameter of a From/To value, checking the value's outer syntax."""
    if not text:
        raise bad_request(f"empty {what}")
    start = 0
    if '"' in text:
        if "," in text:
            values = split_top_level(text, ",", what)  # also checks every quoted string
        else:
            values = [text]
            split_top_level(text, ";", what)
        if len(values) > 1:
            raise bad_request(f"several values in single-value header {what}")
        if text[0] == '"':
            start = find_quote_end(text, 0, what)
    elif "," in text and len(split_top_level(text, ",", what)) > 1:
        raise bad_request(f"several values in single-value header {what}")
    lt = text.find("<", start)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise bad_request(f"unterminated <URI> in {what}")
        params = text[gt + 1 :]
    else:
        if ">" in text:
            raise bad_request(f"unbalanced > in {what}")
        semi = text.find(";", start)
        if semi < 0:
            return None
        params = text[semi:]
    if "tag" not in params and "TAG" not in params.upper():
        return None
    return parse_params(params.lstrip().lstrip(";"), what).get("tag")


class Message:
    """Common part of requests and responses: headers, body and the routing fields."""

    __slots__ = (
        "_call_id",
        "_cseq",
        "_fields",
        "_from_tag",
        "_index",
        "_max_forwards",
        "_to_tag",
        "_top_via",
        "_vias",
        "body",
    )

    _fields: list[_Field]
    _index: dict[str, list[_Field]]
    body: bytes
    _call_id: str
    _cseq: CSeq
    _from_tag: str | None
    _to_tag: str | None
    _max_forwards: int | None
    _vias: list[Via] | None
    _top_via: Via | None

    # -- routing fields (eager) -------------------------------------------------------------

    @property
    def call_id(self) -> str:
        """The Call-ID (RFC 3261 §20.8)."""
        return self._call_id

    @call_id.setter
    def call_id(self, value: str) -> None:
        self.set_header("Call-ID", value)

    @property
    def cseq(self) -> CSeq:
        """The CSeq (RFC 3261 §20.16)."""
        return self._cseq

    @cseq.setter
    def cseq(self, value: CSeq) -> None:
        self.set_header("CSeq", str(value))

    @property
    def from_tag(self) -> str | None:
        """The `tag` parameter of From."""
        return self._from_tag

    @from_tag.setter
    def from_tag(self, value: str | None) -> None:
        self._set_tag("from", value)

    @property
    def to_tag(self) -> str | None:
        """The `tag` parameter of To."""
        return self._to_tag

    @to_tag.setter
    def to_tag(self, value: str | None) -> None:
        self._set_tag("to", value)

    @property
    def max_forwards(self) -> int | None:
        """Max-Forwards (RFC 3261 §20.22), None when absent (responses)."""
        return self._max_forwards

    @max_forwards.setter
    def max_forwards(self, value: int | None) -> None:
        if value is None:
            self.remove_header("Max-Forwards")
        else:
            self.set_header("Max-Forwards", str(int(value)))

    def _set_tag(self, key: str, value: str | None) -> None:
        name = canonical_of_key(key)
        current = self.get(name)
        if current is None:
            raise ValueError(f"no {name} header to tag")
        addr = parse_name_addr(current, name)
        if value is None:
            addr.params.pop("tag", None)
        else:
            addr.params["tag"] = value
        self.set_header(name, str(addr))

    # -- typed views (on demand) -----------------------------------------------------------

    @property
    def vias(self) -> list[Via]:
        """Every Via value, top first (parsed on first use, then cached)."""
        if self._vias is None:
            self._vias = [parse_via(v) for v in self.get_all("via")]
        return self._vias

    @property
    def top_via(self) -> Via:
        """The topmost Via value (RFC 3261 §18.2.2 answers there)."""
        if self._top_via is None:
            if self._vias is not None and self._vias:
                self._top_via = self._vias[0]
            else:
                first = self.get("via")
                if first is None:
                    raise bad_request("missing Via")
                self._top_via = parse_via(first)
        return self._top_via

    @property
    def from_addr(self) -> NameAddr:
        """From as a name-addr (parsed on each call; edit through `set_header`)."""
        return parse_name_addr(self._need("from"), "From")

    @property
    def to_addr(self) -> NameAddr:
        """To as a name-addr."""
        return parse_name_addr(self._need("to"), "To")

    @property
    def contacts(self) -> list[NameAddr]:
        """Contact values (empty for `Contact: *`, see `is_star_contact`)."""
        values = self.get_all("contact")
        if values == ["*"]:
            return []
        if "*" in values:
            raise bad_request("Contact: * mixed with other contacts")
        return [parse_name_addr(v, "Contact") for v in values]

    @property
    def is_star_contact(self) -> bool:
        """True for `Contact: *` (REGISTER removing every binding, RFC 3261 §10.2.2)."""
        return self.get_all("contact") == ["*"]

    @property
    def routes(self) -> list[NameAddr]:
        """Route values, top first."""
        return [parse_name_addr(v, "Route") for v in self.get_all("route")]

    @property
    def record_routes(self) -> list[NameAddr]:
        """Record-Route values, top first."""
        return [parse_name_addr(v, "Record-Route") for v in self.get_all("record-route")]

    @property
    def content_type(self) -> str | None:
        """Content-Type value as written."""
        return self.get("content-type")

    def _need(self, key: str) -> str:
        value = self.get(key)
        if value is None:
            raise bad_request(f"missing {canonical_of_key(key)}")
        return value

    def validate(self) -> None:
        """Parse every header this package models; raises SipParseError on the first defect."""
        self.vias  # noqa: B018 - parsing is the point
        self.from_addr  # noqa: B018
        self.to_addr  # noqa: B018
        self.contacts  # noqa: B018
        self.routes  # noqa: B018
        self.record_routes  # noqa: B018
        for key in ("expires", "min-expires"):
            value = self.get(key)
            if value is not None and not (value.isdigit() and value.isascii()):
                raise bad_request(f"invalid {canonical_of_key(key)} value {value!r}")

    # -- generic header access -------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """First value of a header (name case-insensitive, compact form accepted)."""
        key = _KEY_OF_STR.get(name)
        if key is None:
            key = header_key(name)
        lines = self._index.get(key)
        if not lines:
            return None
        value = lines[0][2].decode(_ENC, _ERR)
        if key in LIST_HEADERS and "," in value:
            parts = split_top_level(value, ",", canonical_of_key(key))
            return parts[0] if parts else ""
        return value

    def get_all(self, name: str) -> list[str]:
        """All values in order; list headers are split at top-level commas."""
        key = _key(name)
        lines = self._index.get(key)
        if not lines:
            return []
        if key in LIST_HEADERS:
            what = canonical_of_key(key)
            out: list[str] = []
            for line in lines:
                value = line[2].decode(_ENC, _ERR)
                if "," in value or '"' in value:
                    out.extend(split_top_level(value, ",", what))
                else:
                    out.append(value)
            return out
        return [line[2].decode(_ENC, _ERR) for line in lines]

    def has(self, name: str) -> bool:
        """True when at least one line of the header is present."""
        return bool(self._index.get(_key(name)))

    def header_lines(self) -> Iterator[tuple[str, str]]:
        """(canonical name, value) of every header line in wire order."""
        for key, _raw, value in self._fields:
            yield canonical_of_key(key), value.decode(_ENC, _ERR)

    def headers_by_name(self) -> dict[str, list[str]]:
        """Canonical name -> all values (list headers split), in first-appearance order."""
        out: dict[str, list[str]] = {}
        for key in self._index:
            out[canonical_of_key(key)] = self.get_all(key)
        return out

    def add_header(self, name: str, value: str, *, first: bool = True) -> None:
        """Add a header line above (`first`) or below the existing lines of that header.

        Without existing lines the new one goes to the top (or bottom) of the header block.
        """
        _check_value(value)
        key = _key(name)
        line = _enc(f"{canonical_of_key(key)}: {value}")
        new: _Field = (key, line, _enc(value.strip()))
        existing = self._index.get(key)
        if existing:
            anchor = existing[0] if first else existing[-1]
            pos = self._position(anchor)
            self._fields.insert(pos if first else pos + 1, new)
        elif first:
            self._fields.insert(0, new)
        else:
            self._fields.append(new)
        self._changed(key)

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of a header by one line (in place of the first one)."""
        _check_value(value)
        key = _key(name)
        line = _enc(f"{canonical_of_key(key)}: {value}")
        new: _Field = (key, line, _enc(value.strip()))
        existing = self._index.get(key)
        if existing:
            pos = self._position(existing[0])
            drop = {id(f) for f in existing}
            fields = [f for f in self._fields if id(f) not in drop]
            fields.insert(pos, new)
            self._fields = fields
        else:
            self._fields.append(new)
        self._changed(key)

    def remove_header(self, name: str) -> int:
        """Remove every line of a header; returns how many lines were removed."""
        key = _key(name)
        existing = self._index.get(key)
        if not existing:
            return 0
        self._fields = [f for f in self._fields if f[0] != key]
        self._changed(key)
        return len(existing)

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the top value (Via/Route pop); the rest stays byte for byte."""
        key = _key(name)
        existing = self._index.get(key)
        if not existing:
            return None
        top = existing[0]
        pos = self._position(top)
        value = top[2].decode(_ENC, _ERR)
        cut = _first_top_level_comma(value) if key in LIST_HEADERS else -1
        if cut < 0:
            del self._fields[pos]
            self._changed(key)
            return value.strip()
        first, rest = value[:cut].strip(), value[cut + 1 :].strip()
        if not rest:
            del self._fields[pos]
        else:
            colon = top[1].index(b":")
            rest_b = _enc(rest)
            self._fields[pos] = (key, top[1][: colon + 1] + b" " + rest_b, rest_b)
        self._changed(key)
        return first

    def _position(self, field: _Field) -> int:
        for i, candidate in enumerate(self._fields):
            if candidate is field:
                return i
        raise LookupError("header line not found")  # pragma: no cover - index invariant

    def _changed(self, key: str) -> None:
        index: dict[str, list[_Field]] = {}
        for f in self._fields:
            lst = index.get(f[0])
            if lst is None:
                index[f[0]] = [f]
            else:
                lst.append(f)
        self._index = index
        if key == "via":
            self._vias = None
            self._top_via = None
        elif key in _EAGER:
            self._refresh(key, strict=False)

    def _refresh(self, key: str, *, strict: bool) -> None:
        """Recompute one eager field from the header lines."""
        lines = self._index.get(key)
        if key == "call-id":
            self._call_id = lines[0][2].decode(_ENC, _ERR) if lines else ""
        elif key == "cseq":
            self._cseq = parse_cseq(_dec(lines[0][2])) if lines else CSeq(0, "")
        elif key == "from":
            self._from_tag = _name_addr_tag(_dec(lines[0][2]), "From") if lines else None
        elif key == "to":
            self._to_tag = _name_addr_tag(_dec(lines[0][2]), "To") if lines else None
        elif key == "max-forwards":
            self._max_forwards = _parse_max_forwards(lines[0][2]) if lines else None

    # -- serialization ---------------------------------------------------------------------

    def _start_line(self) -> bytes:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes: untouched headers byte for byte, Content-Length matching the body."""
        body = self.body
        length = b"%d" % len(body)
        parts = [self._start_line()]
        cl_done = False
        for key, raw, value in self._fields:
            if key == "content-length":
                if cl_done:
                    continue  # duplicates (equal values) collapse into the one we write
                cl_done = True
                if value != length:
                    raw = raw[: raw.index(b":") + 1] + b" " + length
            parts.append(raw)
        if not cl_done:
            parts.append(b"Content-Length: " + length)
        parts.append(b"")
        parts.append(body)
        return b"\r\n".join(parts)

    def __bytes__(self) -> bytes:
        return self.serialize()

    def copy(self) -> Self:
        """An independent copy: editing it never changes this message."""
        twin = object.__new__(type(self))
        twin._copy_from(self)
        return twin

    def _copy_from(self, other: Message) -> None:
        self._fields = list(other._fields)
        self._index = {k: list(v) for k, v in other._index.items()}
        self.body = other.body
        self._call_id = other._call_id
        self._cseq = other._cseq
        self._from_tag = other._from_tag
        self._to_tag = other._to_tag
        self._max_forwards = other._max_forwards
        self._vias = None
        self._top_via = None

    def _header_key_values(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, _r, v in self._fields if k != "content-length"]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or type(self) is not type(other):
            return NotImplemented
        return (
            self._start_line().upper() == other._start_line().upper()
            and self._header_key_values() == other._header_key_values()
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def _init_headers(self, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        self._fields = []
        self._index = {}
        for name, value in headers:
            _check_value(value)
            key = _key(name)
            f: _Field = (key, _enc(f"{canonical_of_key(key)}: {value}"), _enc(value.strip()))
            self._fields.append(f)
            self._index.setdefault(key, []).append(f)
        self.body = body
        self._vias = None
        self._top_via = None
        for key in ("call-id", "cseq", "from", "to", "max-forwards"):
            self._refresh(key, strict=False)


class Request(Message):
    """A SIP request. `method` is case-sensitive and kept as received (RFC 3261 §7.1)."""

    __slots__ = ("_parsed_uri", "_uri", "method")

    method: str
    _uri: str
    _parsed_uri: Uri | None

    def __init__(
        self,
        method: str,
        uri: str,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        self.method = method
        self._uri = uri
        self._parsed_uri = None
        self._init_headers(headers, body)

    @property
    def uri(self) -> str:
        """The raw Request-URI text."""
        return self._uri

    @uri.setter
    def uri(self, value: str) -> None:
        self.set_uri(value)

    def set_uri(self, uri: str) -> None:
        """Replace the Request-URI (e.g. after a registrar lookup)."""
        if not uri or any(ch in uri for ch in " \t\r\n"):
            raise ValueError(f"invalid Request-URI {uri!r}")
        self._uri = uri
        self._parsed_uri = None

    @property
    def parsed_uri(self) -> Uri:
        """The Request-URI parsed (cached); raises 400 when it is malformed."""
        if self._parsed_uri is None:
            self._parsed_uri = parse_uri(self._uri, "Request-URI")
        return self._parsed_uri

    def validate(self) -> None:
        """Parse every modelled part, Request-URI included."""
        self.parsed_uri  # noqa: B018
        super().validate()

    def _start_line(self) -> bytes:
        return _enc(f"{self.method} {self._uri} SIP/2.0")

    def _copy_from(self, other: Message) -> None:
        super()._copy_from(other)
        assert isinstance(other, Request)
        self.method = other.method
        self._uri = other._uri
        self._parsed_uri = None

    def __repr__(self) -> str:
        return f"<Request {self.method} {self._uri} call-id={self._call_id!r}>"


class Response(Message):
    """A SIP response; `reason` may be empty or any UTF-8 text (RFC 3261 §7.2)."""

    __slots__ = ("reason", "status")

    status: int
    reason: str

    def __init__(
        self,
        status: int,
        reason: str | None = None,
        headers: Iterable[tuple[str, str]] = (),
        body: bytes = b"",
    ) -> None:
        if not 100 <= status <= 699:
            raise ValueError(f"status {status} outside 100-699")
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self._init_headers(headers, body)

    def _start_line(self) -> bytes:
        return b"SIP/2.0 %d " % self.status + _enc(self.reason)

    def _copy_from(self, other: Message) -> None:
        super()._copy_from(other)
        assert isinstance(other, Response)
        self.status = other.status
        self.reason = other.reason

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self._call_id!r}>"


def _first_top_level_comma(text: str) -> int:
    if "," not in text:
        return -1
    if '"' not in text and "<" not in text:
        return text.find(",")
    depth = 0
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == '"':
            i = find_quote_end(text, i, "header")
            continue
        if ch == "<":
            depth += 1
        elif ch == ">" and depth:
            depth -= 1
        elif ch == "," and not depth:
            return i
        i += 1
    return -1


def _parse_max_forwards(value: bytes) -> int:
    if not value.isdigit() or len(value) > 3 or int(value) > 255:
        # RFC 3261 §20.22: 0-255; RFC 4475 §3.1.2.4 expects 400 for 300.
        raise bad_request(f"invalid Max-Forwards {_dec(value)!r}")
    return int(value)


# -- the parser --------------------------------------------------------------------------------


def parse_message(data: bytes) -> Request | Response:
    """Parse one complete message (a datagram, or one message framed off a stream).

    Raises SipParseError with the RFC's answer for any defect; never anything else.
    """
    if not isinstance(data, bytes):
        data = bytes(data)
    if data[:2] == b"\r\n":
        # RFC 3261 §7.5: CRLFs before the start line are ignored.
        data = data.lstrip(b"\r\n")
    end = data.find(b"\r\n\r\n")
    if end >= 0:
        head = data[:end]
        body = data[end + 4 :]
        lines = head.split(b"\r\n")
    else:
        # Bare-LF line ends are not SIP, but some stacks send them; accept them whole.
        end = data.find(b"\n\n")
        if end < 0:
            if not data:
                raise bad_request("empty message")
            if data.endswith(b"\r\n") or data.endswith(b"\n"):
                head = data.rstrip(b"\r\n")
                body = b""
            else:
                head = data
                body = b""
            # Without the empty line the header block is all there is (RFC 3261 §7 requires
            # the empty line; tolerate it missing on a datagram that carries no body).
        else:
            head = data[:end]
            body = data[end + 2 :]
        lines = head.replace(b"\r\n", b"\n").split(b"\n")
    start = lines[0]
    is_response = start[:4].upper() == b"SIP/"
    try:
        if is_response:
            msg: Request | Response = _start_response(start)
        else:
            msg = _start_request(start)
        _parse_headers(msg, lines, body, is_response)
    except SipParseError as err:
        if is_response and err.status is not None:
            # A malformed response cannot be answered: drop it (RFC 3261 §18.1.2).
            raise SipParseError(None, err.detail, "") from None
        raise
    except (UnicodeError, ValueError, IndexError) as err:  # pragma: no cover - safety net
        if is_response:
            raise SipParseError(None, f"malformed response ({err})", "") from None
        raise bad_request(f"malformed message ({err})") from None
    return msg


def _start_request(start: bytes) -> Request:
    parts = start.split(b" ")
    if len(parts) != 3:
        if b"\t" in start:
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
    if b":" not in uri_b:
        raise bad_request(f"Request-URI without scheme {_dec(uri_b[:80])!r}")
    req = object.__new__(Request)
    req.method = method_b.decode(_ENC, _ERR)
    req._uri = uri_b.decode(_ENC, _ERR)
    req._parsed_uri = None
    return req


def _start_response(start: bytes) -> Response:
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
    resp = object.__new__(Response)
    resp.status = status
    resp.reason = reason.decode(_ENC, _ERR)
    return resp


def _parse_headers(msg: Message, lines: list[bytes], body: bytes, is_response: bool) -> None:
    fields: list[_Field] = []
    index: dict[str, list[_Field]] = {}
    key_of = _KEY_OF_BYTES
    for line in lines[1:] if len(lines) > 1 else ():
        first = line[:1]
        if first == b" " or first == b"\t":
            if not fields:
                raise bad_request("continuation line before the first header")
            # Folding (RFC 3261 §7.3.1): the raw line keeps the fold, the value is joined.
            pkey, praw, pvalue = fields[-1]
            joined = (pvalue + b" " + line.strip(b" \t")).strip()
            updated = (pkey, praw + b"\r\n" + line, joined)
            fields[-1] = updated
            index[pkey][-1] = updated
            continue
        name, colon, value = line.partition(b":")
        if not colon:
            if not line.strip():
                raise bad_request("empty line inside the header block")
            raise bad_request(f"header line without colon {_dec(line[:40])!r}")
        found = key_of.get(name)
        key = found if found is not None else _slow_key(name)
        f = (key, line, value.strip(b" \t"))
        fields.append(f)
        lst = index.get(key)
        if lst is None:
            index[key] = [f]
        else:
            lst.append(f)
    msg._fields = fields
    msg._index = index
    msg._vias = None
    msg._top_via = None

    # Mandatory headers (RFC 3261 §8.1.1): missing ones are a 400; several values of a
    # single-value header too (RFC 4475 §3.1.2.13 "multi01").
    for key in _MANDATORY:
        got = index.get(key)
        if got is None:
            raise bad_request(f"missing {canonical_of_key(key)}")
        if len(got) > 1:
            raise bad_request(f"several values in single-value header {canonical_of_key(key)}")
    if "via" not in index:
        raise bad_request("missing Via")

    call_id = index["call-id"][0][2]
    if not call_id:
        raise bad_request("empty Call-ID")
    if b"," in call_id or b" " in call_id or b"\t" in call_id:
        raise bad_request("several values or whitespace in single-value header Call-ID")
    msg._call_id = call_id.decode(_ENC, _ERR)

    cseq = parse_cseq(index["cseq"][0][2].decode(_ENC, _ERR))
    msg._cseq = cseq
    msg._from_tag = _name_addr_tag(index["from"][0][2].decode(_ENC, _ERR), "From")
    msg._to_tag = _name_addr_tag(index["to"][0][2].decode(_ENC, _ERR), "To")

    mf = index.get("max-forwards")
    if mf is None:
        if not is_response:
            raise bad_request("missing Max-Forwards")
        msg._max_forwards = None
    else:
        if len(mf) > 1:
            raise bad_request("several values in single-value header Max-Forwards")
        msg._max_forwards = _parse_max_forwards(mf[0][2])

    if not is_response:
        assert isinstance(msg, Request)
        if cseq.method != msg.method:
            raise bad_request(f"CSeq method {cseq.method} differs from request method {msg.method}")

    cl = index.get("content-length")
    if cl is not None:
        length = _content_length(cl)
        if length > len(body):
            raise bad_request(
                f"Content-Length {length} larger than the {len(body)} body bytes received"
            )
        if length < len(body):
            body = body[:length]  # RFC 3261 §18.3: surplus bytes of a datagram are discarded
    msg.body = body


def _content_length(lines: list[_Field]) -> int:
    values = {line[2] for line in lines}
    if len(values) > 1:
        raise bad_request("conflicting Content-Length values")
    value = next(iter(values))
    if not value.isdigit():
        if value[:1] == b"-":
            raise bad_request(f"negative Content-Length {_dec(value[:20])}")
        raise bad_request(f"invalid Content-Length {_dec(value[:20])!r}")
    return int(value)


__all__ = ["Message", "Request", "Response", "parse_message"]
