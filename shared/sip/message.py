"""SIP messages: the model of a Request or Response, its edits and its serialization.

How it works (RFC 3261 §7, §18.3, §20); the parser that builds it from bytes is
`parser.py`, which hands over checked header tuples and routing fields through the
constructors' arguments after `body` (`start`, `keys`, `lines`, ...):

* Headers are two parallel tuples in wire order: `_keys` (lower-case canonical names, compact
  forms expanded) and `_lines` (the raw bytes of each line, folds included, so an untouched
  header serializes byte for byte). Lookups are
  `tuple.index`/`tuple.count` in C; a value is cut from its raw line when read. The tuples
  are never mutated, only replaced: `copy()` shares them (copy-on-write), an edit builds
  new tuples from slices, and tuples of str/bytes are not tracked by the cyclic garbage
  collector, which matters to a proxy holding thousands of messages in its transactions.
* Only what routing needs is kept eagerly (read by the parser): Call-ID, CSeq, the From and
  To tags, Max-Forwards (None when absent, as from an RFC 2543 element); an edit of one of
  those headers refreshes it. Everything else (Via values, the Request-URI, Contact, Route,
  ...) is parsed on demand (Vias and the Request-URI are cached). `validate()` parses
  everything this package models, for a linter or a strict element.
* Defects raise `SipParseError` carrying RFC 3261's answer (400 for a request, "drop" for a
  response, RFC 3261 §18.1.2).
* `serialize()` writes the start line, every header line as stored, and a Content-Length that
  always matches the body (added when missing, rewritten when wrong).

Header values are decoded as UTF-8 with `surrogateescape`, so any byte sequence round-trips.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from types import FunctionType
from typing import Final, Self, cast

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
from shared.sip.limits import (
    MAX_CONTACT_VALUES,
    MAX_ROUTING_VALUES,
    ROUTING_HEADERS,
)
from shared.sip.nameaddr import NameAddr, parse_name_addr
from shared.sip.status import reason_phrase
from shared.sip.uri import Uri, parse_uri
from shared.sip.via import Via, parse_via

_ENC: Final = "utf-8"
_ERR: Final = "surrogateescape"
# Single bytes as ints, for `in` tests on bytes: `b"," in data` makes CPython 3.11 try the
# needle as an int first, raising and clearing a formatted TypeError (~2,000 instructions,
# 87 times per proxied call); `_COMMA in data` is a memchr.  Same answer either way.
_NUL: Final = 0
_TAB: Final = 9
_LF: Final = 10
_SP: Final = 32
_DQUOTE: Final = 34
_COMMA: Final = 44
_COLON: Final = 58
_SEMI: Final = 59
_BACKSLASH: Final = 92
_TOKEN_CHARS: Final = frozenset(
    b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~"
)
_TOKEN_TEXT: Final = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")
_EAGER: Final = SINGLE_VALUE_HEADERS
# What `validate` parses, by header key.
_T_VIA, _T_ADDR, _T_ADDRS, _T_DELTA, _T_WARNING, _T_DATE, _T_TAGS = range(7)
_TYPED: Final[dict[str, int]] = {
    "via": _T_VIA,
    "from": _T_ADDR,
    "to": _T_ADDR,
    "contact": _T_ADDRS,
    "route": _T_ADDRS,
    "record-route": _T_ADDRS,
    "expires": _T_DELTA,
    "min-expires": _T_DELTA,
    "retry-after": _T_DELTA,
    "warning": _T_WARNING,
    "date": _T_DATE,
    # option-tag = token (RFC 3261 §20.29, §20.32, §20.37, §20.40): a proxy echoes them in
    # Unsupported (420), so they must be tokens, never control characters.
    "require": _T_TAGS,
    "proxy-require": _T_TAGS,
    "supported": _T_TAGS,
    "unsupported": _T_TAGS,
}


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
# NamedTuples built per message (CSeq): their generated __new__ is an
# interpreted lambda even in the compiled core; tuple.__new__ builds the same tuple.
_new_tuple = tuple.__new__
_new_cseq = _new_tuple


def _key(name: str) -> str:
    key = _KEY_OF_STR.get(name)
    return key if key is not None else header_key(name)


def _compiled() -> bool:
    return not isinstance(_compiled, FunctionType)


# Compiled (mypyc) or Python (shared/compiled.py): the header lookups below take one of two
# renderings with the same answers.  Compiled, `_first`/`_scan` are native loops comparing
# str with str; `in`, `tuple.index` and `tuple.count` would be generic calls going through
# CPython's rich comparison for each key (about 5% of a compiled call).  As Python, the
# C-level tuple methods are the fast way.
_COMPILED: Final = _compiled()


def _first(keys: tuple[str, ...], key: str) -> int:
    """The position of the first `key` in `keys`, -1 when absent (compiled rendering)."""
    for i in range(len(keys)):
        if keys[i] == key:
            return i
    return -1


def _scan(keys: tuple[str, ...], key: str) -> tuple[int, int]:
    """(the position of the first `key` or -1, how many there are) (compiled rendering)."""
    first = -1
    n = 0
    for i in range(len(keys)):
        if keys[i] == key:
            if n == 0:
                first = i
            n += 1
    return first, n


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


def _prevalidate(key: str, value: str) -> tuple[object]:
    """Refuse (SipParseError 400) a routing-field value before it replaces a good one.

    Returns the parsed field (in a 1-tuple, as a tag may be None) so an edit that makes
    this value the header's first stores it without parsing the value again.
    """
    value = value.strip()
    if key == "call-id":
        if not value or "," in value or " " in value or "\t" in value:
            raise bad_request(f"invalid Call-ID {value[:40]!r}")
        return (value,)
    if key == "cseq":
        return (parse_cseq(value),)
    if key == "max-forwards":
        return (_parse_max_forwards(_enc(value)),)
    return (_name_addr_tag(value, canonical_of_key(key)),)


def _name_addr_tag(text: str, what: str) -> str | None:
    """The `tag` header parameter of a From/To value, checking the value's outer syntax.

    Fast path for the usual shapes (`"Name" <uri>;params`, `Name <uri>;params`, `uri;params`);
    anything with quotes beyond a leading display name goes through the full splitter.
    """
    if not text:
        raise bad_request(f"empty {what}")
    start = find_quote_end(text, 0, what) if text[0] == '"' else 0
    if '"' in text[start:]:
        # Quotes elsewhere (parameter values, odd display names): check everything.
        if len(split_top_level(text, ",", what)) > 1:
            raise bad_request(f"several values in single-value header {what}")
        return parse_name_addr(text, what).params.get("tag")
    lt = text.find("<", start)
    if lt >= 0:
        gt = text.find(">", lt)
        if gt < 0:
            raise bad_request(f"unterminated <URI> in {what}")
        params = text[gt + 1 :]
        if "," in params or "," in text[start:lt] or "<" in params:
            raise bad_request(f"several values in single-value header {what}")
    else:
        if ">" in text:
            raise bad_request(f"unbalanced > in {what}")
        if "," in text:
            raise bad_request(f"several values in single-value header {what}")
        semi = text.find(";", start)
        if semi < 0:
            return None
        params = text[semi:]
    if not params:
        return None
    i = params.find(";tag=")
    if i >= 0:
        value = params[i + 5 :]
        j = value.find(";")
        return (value if j < 0 else value[:j]).strip()
    if "tag" not in params.lower():
        return None
    return parse_params(params.lstrip().lstrip(";"), what).get("tag")


class ValidatedLines:
    """Raw header lines that `Message.validate` accepted, with their value counts.

    A proxy validates every message it acts on; most lines of a dialog's messages repeat
    byte for byte (From, To once tagged, Contact, Record-Route, the Vias a response copies),
    so a bounded memory of accepted lines spares their parsing.  Only lines that passed are
    kept: a line is never accepted because of this memory unless it parsed before.
    """

    __slots__ = ("limit", "lines")

    LONGEST = 1024  # bytes: longer lines are parsed each time (and cannot bloat the memory)

    def __init__(self, limit: int = 4096) -> None:
        self.limit = limit  # at most limit x LONGEST bytes of lines: 4 MB by default
        self.lines: dict[bytes, int] = {}

    def remember(self, raw: bytes, values: int) -> None:
        if len(raw) > self.LONGEST:
            return
        lines = self.lines
        if len(lines) >= self.limit:
            lines.clear()  # bounded; cheaper than an LRU, and refilled within a few calls
        lines[raw] = values

    def vouch_top_via(self, message: Message) -> None:
        """The first Via line, when it holds a single value the caller has parsed already
        (`message.top_via`, or a proxy's rewrite of it with received/rport)."""
        keys = message._keys
        if "via" in keys:
            raw = message._lines[keys.index("via")]
            if _COMMA not in raw and raw not in self.lines:
                self.remember(raw, 1)

    def vouch(self, message: Message, keys: frozenset[str]) -> None:
        """Remember `message`'s lines of `keys` as valid without parsing them.

        Only for a message the caller built itself from a validated one: a proxy's
        forwarded request, whose Vias (its own and the stamped ones) and Record-Routes come
        back byte for byte in every response (RFC 3261 §8.2.6.2, §12.1.1)."""
        lines = self.lines
        for key, raw in zip(message._keys, message._lines):  # noqa: B905 (one length)
            if key in keys and raw not in lines:
                value = _line_value(raw).decode(_ENC, _ERR)
                n = len(split_top_level(value, ",", key)) if "," in value else 1
                self.remember(raw, n)


class Message:
    """Common part of requests and responses: headers, body and the routing fields."""

    __slots__ = (
        "_call_id",
        "_cseq",
        "_from_tag",
        "_keys",
        "_lines",
        "_max_forwards",
        "_raw_of",
        "_raw_start",
        "_to_tag",
        "_top_via",
        "_vias",
        "body",
    )

    # Header lines in wire order: `_keys[i]` is the lower-case canonical name of the raw
    # line `_lines[i]` (folds included). Parallel tuples keep lookups in C (`tuple.index`)
    # and are replaced, never mutated, so copies share them.
    _keys: tuple[str, ...]
    _lines: tuple[bytes, ...]
    body: bytes
    _call_id: str
    _cseq: CSeq
    _from_tag: str | None
    _to_tag: str | None
    _max_forwards: int | None
    _vias: list[Via] | None
    _top_via: Via | None
    # The start line as received, written back by `serialize` while the method (a request;
    # the Request-URI: `set_uri` drops it) or the status and reason (a response) are the
    # ones it was read as: `_raw_of` is that method or reason, the very object.
    _raw_start: bytes | None
    _raw_of: str | None

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
            vias: list[Via] = []
            for key, raw in zip(self._keys, self._lines):  # noqa: B905 (one length)
                if key == "via":
                    value = (
                        _line_value(raw) if _LF in raw else raw.partition(b":")[2].strip(b" \t")
                    ).decode(_ENC, _ERR)
                    if "," in value or '"' in value:
                        vias.extend(parse_via(v) for v in split_top_level(value, ",", "Via"))
                    elif value:
                        vias.append(parse_via(value))
            self._vias = vias
        return self._vias

    @property
    def top_via(self) -> Via:
        """The topmost Via value (RFC 3261 §18.2.2 answers there)."""
        if self._top_via is None:
            if self._vias:
                self._top_via = self._vias[0]
            else:
                first = self.get("via")
                if first is None:
                    raise bad_request("missing Via")
                self._top_via = parse_via(first)
        return self._top_via

    def top_via_line(self) -> bytes | None:
        """The raw first Via line (folds and spacing as written), None without one."""
        keys = self._keys
        if _COMPILED:
            pos = _first(keys, "via")
            return self._lines[pos] if pos >= 0 else None
        return self._lines[keys.index("via")] if "via" in keys else None

    def drop_top_via_line(self, line: bytes) -> bool:
        """Remove the first Via line when it is `line` byte for byte (a single Via this
        proxy wrote, taken off a response it relays, RFC 3261 §16.7 step 3): no decode, no
        split, one new tuple of each kind.  False, nothing changed, for any other line
        (`pop_first_value` then does it the general way)."""
        keys = self._keys
        if _COMPILED:
            pos = _first(keys, "via")
        else:
            pos = keys.index("via") if "via" in keys else -1
        lines = self._lines
        if pos < 0 or lines[pos] != line:
            return False
        if pos == 0:
            self._keys = keys[1:]
            self._lines = lines[1:]
        else:
            self._keys = keys[:pos] + keys[pos + 1 :]
            self._lines = lines[:pos] + lines[pos + 1 :]
        self._vias = None
        self._top_via = None
        return True

    def known_top_via(self, known: dict[bytes, Via]) -> Via | None:
        """The top Via when its raw line is a key of `known`, taken from there, not parsed;
        None otherwise.  A proxy's own Vias come back byte for byte in the responses to what
        it forwarded (RFC 3261 §8.2.6.2, §16.7 step 3): it keeps them by the line it wrote
        (`top_via_line` of the request) with their parsed form (`push_via`), and a response
        whose first line is one of them needs no Via parse.  Any other spelling (a compact
        name, several values on the line) is simply not found and parsed as before."""
        line = self.top_via_line()
        if line is None:
            return None
        via = known.get(line)
        if via is not None:
            self._top_via = via
        return via

    @property
    def from_addr(self) -> NameAddr:
        """From as a name-addr (parsed on each call; edit through `set_header`)."""
        value = self.get("from")
        if value is None:
            raise bad_request("missing From")
        return parse_name_addr(value, "From")

    @property
    def to_addr(self) -> NameAddr:
        """To as a name-addr."""
        value = self.get("to")
        if value is None:
            raise bad_request("missing To")
        return parse_name_addr(value, "To")

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

    def validate(self, known: ValidatedLines | None = None) -> None:
        """Parse every header this package models; raises SipParseError on the first defect.

        One pass over the lines in wire order: Via, From/To, Contact/Route/Record-Route as
        name-addrs, delta-seconds (Expires, Min-Expires, Retry-After, Contact expires) within
        2^32-1, Warning codes of three digits, option-tags (Require, Proxy-Require,
        Supported, Unsupported) as tokens, at most `MAX_ROUTING_VALUES` values of each
        routing header (513 beyond, `limits.py`). The parsed Vias are kept for `vias`.

        `known` (a proxy's `ValidatedLines`) remembers raw lines that passed: the same
        From, To, Contact or Route line in the next messages of a dialog is not parsed again.
        """
        vias: list[Via] | None = []
        star = False
        contacts = 0
        counts: dict[str, int] = {}
        seen = known.lines if known is not None else None
        # Plain zip (the two lists have one length by construction) and dict.get on the
        # dicts themselves: both are loops and lookups the compiled core runs inline,
        # where zip(strict=True) and bound `get`s stay generic calls.
        for key, raw in zip(self._keys, self._lines):  # noqa: B905
            kind = _TYPED.get(key)
            if kind is None:
                continue
            if seen is not None:
                n = seen.get(raw)
                if n is not None:  # passed before: only count its values
                    if n > 1 or kind == _T_VIA or key in ROUTING_HEADERS:
                        if key in ROUTING_HEADERS:
                            total = counts.get(key, 0) + n
                            if total > MAX_ROUTING_VALUES:
                                _count_routing(counts, key, n)  # raises the 513
                            counts[key] = total
                            if kind == _T_VIA:
                                vias = None  # not all parsed here: `vias` parses them later
                        elif key == "contact":
                            contacts += n
                            if contacts > MAX_CONTACT_VALUES:
                                raise SipParseError(
                                    513, f"over {MAX_CONTACT_VALUES} Contact values")
                    elif key == "contact":
                        contacts += 1
                    continue
            n = 1
            value = (
                _line_value(raw) if _LF in raw else raw.partition(b":")[2].strip(b" \t")
            ).decode(_ENC, _ERR)
            if kind == _T_VIA:
                if "," in value or '"' in value:
                    texts = split_top_level(value, ",", "Via", MAX_ROUTING_VALUES)
                else:
                    texts = [value] if value else []
                n = _count_routing(counts, key, len(texts))
                parsed = [parse_via(v) for v in texts]
                if vias is not None:
                    vias.extend(parsed)
            elif kind == _T_ADDR:
                parse_name_addr(value, canonical_of_key(key))
            elif kind == _T_ADDRS:
                what = canonical_of_key(key)
                bound = MAX_ROUTING_VALUES if key in ROUTING_HEADERS else MAX_CONTACT_VALUES
                parts = (
                    split_top_level(value, ",", what, bound)
                    if "," in value or '"' in value else [value]
                )
                n = len(parts)
                # Counted before they are parsed: a list bomb costs a split, no more.
                if key in ROUTING_HEADERS:
                    _count_routing(counts, key, n)
                elif contacts + n > MAX_CONTACT_VALUES:
                    raise SipParseError(513, f"over {MAX_CONTACT_VALUES} Contact values")
                for part in parts:
                    if key == "contact":
                        contacts += 1
                        if part == "*":
                            star = True
                            continue
                    addr = parse_name_addr(part, what)
                    expires = addr.params.get("expires") if key == "contact" else None
                    if expires is not None and not _is_delta_seconds(expires):
                        raise bad_request(f"invalid Contact expires {expires[:40]!r}")
            elif kind == _T_DELTA:
                number = value.split("(")[0].split(";")[0].strip()
                if not _is_delta_seconds(number):
                    # RFC 3261 §20.19: delta-seconds beyond 2^32-1 (RFC 4475 §3.1.2.4).
                    raise bad_request(f"invalid {canonical_of_key(key)} value {value[:40]!r}")
            elif kind == _T_DATE:
                # RFC 3261 §20.17: the time zone is always "GMT" (RFC 4475 §3.1.2.12).
                if not value.endswith(" GMT"):
                    raise bad_request(f"Date not in GMT: {value[:40]!r}")
            elif kind == _T_TAGS:
                for tag in value.split(","):
                    tag = tag.strip(" \t")
                    if tag and not _TOKEN_TEXT.issuperset(tag):
                        raise bad_request(
                            f"invalid option-tag {tag[:40]!r} in {canonical_of_key(key)}")
            else:  # Warning: warn-code is 3DIGIT (RFC 3261 §20.43, RFC 4475 §3.1.2.5)
                for warning in split_top_level(value, ",", "Warning"):
                    code = warning.split(" ", 1)[0]
                    if len(code) != 3 or not code.isdigit() or not code.isascii():
                        raise bad_request(f"invalid Warning code {code[:20]!r}")
            if known is not None and not star:
                known.remember(raw, n)
        if star and contacts > 1:
            raise bad_request("Contact: * mixed with other contacts")
        if vias is not None:
            self._vias = vias

    # -- generic header access -------------------------------------------------------------

    def get(self, name: str) -> str | None:
        """First value of a header (name case-insensitive, compact form accepted)."""
        key = _KEY_OF_STR.get(name)
        if key is None:
            key = header_key(name)
        keys = self._keys
        if _COMPILED:
            pos = _first(keys, key)
            if pos < 0:
                return None
        elif key in keys:
            pos = keys.index(key)
        else:
            return None
        raw = self._lines[pos]
        value = (
            _line_value(raw) if _LF in raw else raw.partition(b":")[2].strip(b" \t")
        ).decode(_ENC, _ERR)
        if key in LIST_HEADERS and ("," in value or '"' in value):
            parts = split_top_level(value, ",", canonical_of_key(key))
            return parts[0] if parts else ""
        return value

    def get_all(self, name: str) -> list[str]:
        """All values in order; list headers are split at top-level commas."""
        key = _KEY_OF_STR.get(name)
        if key is None:
            key = header_key(name)
        keys = self._keys
        if _COMPILED:
            pos, n = _scan(keys, key)
        elif key in keys:
            pos, n = keys.index(key), keys.count(key)
        else:
            return []
        if n == 0:
            return []
        if n == 1:
            raws = [self._lines[pos]]
        else:
            raws = [line for k, line in zip(keys, self._lines) if k == key]  # noqa: B905 (one length)
        values = [
            (
                _line_value(raw) if _LF in raw else raw.partition(b":")[2].strip(b" \t")
            ).decode(_ENC, _ERR)
            for raw in raws
        ]
        if key in LIST_HEADERS:
            out: list[str] = []
            for value in values:
                if "," in value or '"' in value:
                    out.extend(split_top_level(value, ",", canonical_of_key(key)))
                elif value:
                    out.append(value)
            return out
        return values

    def has(self, name: str) -> bool:
        """True when at least one line of the header is present."""
        if _COMPILED:
            return _first(self._keys, _key(name)) >= 0
        return _key(name) in self._keys

    def header_lines(self) -> Iterator[tuple[str, str]]:
        """(canonical name, value) of every header line in wire order."""
        for key, line in zip(self._keys, self._lines, strict=True):
            yield canonical_of_key(key), _line_value(line).decode(_ENC, _ERR)

    def headers_by_name(self) -> dict[str, list[str]]:
        """Canonical name -> all values (list headers split), in first-appearance order."""
        return {canonical_of_key(key): self.get_all(key) for key in dict.fromkeys(self._keys)}

    def push_via(self, transport: str, host: str, port: int, branch: str,
                 extra: tuple[str, str] | None = None) -> Via:
        """Our Via on top (RFC 3261 §16.6 step 8, §8.1.1.7): `SIP/2.0/<transport>
        <host>:<port>;branch=<branch>`, `host` as written in a URI (IPv6 in brackets),
        then `;name=value` of `extra` if given (the anycast owner's `cid`).
        Its parsed form is kept as the top Via, so the transaction layer reading the
        branch does not parse back what was just written (`branch` and `extra` tokens)."""
        params: dict[str, str | None] = {"branch": branch}
        suffix = ""
        if extra is not None:
            params[extra[0]] = extra[1]
            suffix = f";{extra[0]}={extra[1]}"
        self.add_header("Via", f"SIP/2.0/{transport} {host}:{port};branch={branch}{suffix}")
        via = Via(transport, host, port, params)
        self._top_via = via
        return via

    def add_header(self, name: str, value: str, *, first: bool = True) -> None:
        """Add a header line above (`first`) or below the existing lines of that header.

        Without existing lines the new one goes to the top (or bottom) of the header block.
        """
        _check_value(value)
        key = _key(name)
        field = _prevalidate(key, value) if key in _EAGER else None
        line = _enc(f"{canonical_of_key(key)}: {value}")
        keys = self._keys
        lines = self._lines
        present = key in keys
        if present:
            if first:
                pos = keys.index(key)
            else:
                pos = len(keys) - keys[::-1].index(key)
        else:
            pos = 0 if first else len(keys)
        self._keys = (*keys[:pos], key, *keys[pos:])
        self._lines = (*lines[:pos], line, *lines[pos:])
        if key == "via":
            self._vias = None
            self._top_via = None
        elif field is not None and (first or not present):
            # The new line is now the first of its header: it defines the routing field.
            self._set_field(key, field[0])

    def set_header(self, name: str, value: str) -> None:
        """Replace every line of a header by one line (in place of the first one)."""
        _check_value(value)
        key = _key(name)
        field = _prevalidate(key, value) if key in _EAGER else None
        line = _enc(f"{canonical_of_key(key)}: {value}")
        keys = self._keys
        lines = self._lines
        if _COMPILED:
            pos, n = _scan(keys, key)
        elif key in keys:
            pos, n = keys.index(key), keys.count(key)
        else:
            pos, n = -1, 0
        if n:
            if n == 1:
                # The usual case: one line replaced in place, the index is unchanged.
                self._lines = (*lines[:pos], line, *lines[pos + 1 :])
            else:
                kept = [i for i, k in enumerate(keys) if k != key or i == pos]
                self._keys = tuple([keys[i] for i in kept])
                self._lines = tuple([line if i == pos else lines[i] for i in kept])
        else:
            self._keys = (*keys, key)
            self._lines = (*lines, line)
        if key == "via":
            self._vias = None
            self._top_via = None
        elif field is not None:
            self._set_field(key, field[0])

    def remove_header(self, name: str) -> int:
        """Remove every line of a header; returns how many lines were removed."""
        key = _key(name)
        count = _scan(self._keys, key)[1] if _COMPILED else self._keys.count(key)
        if count:
            self._drop(key)
            self._changed(key)
        return count

    def _drop(self, key: str) -> None:
        keys = self._keys
        lines = self._lines
        kept = [i for i, k in enumerate(keys) if k != key]
        self._keys = tuple([keys[i] for i in kept])
        self._lines = tuple([lines[i] for i in kept])

    def pop_first_value(self, name: str) -> str | None:
        """Remove and return the top value (Via/Route pop); the rest stays byte for byte."""
        key = _key(name)
        keys = self._keys
        if key not in keys:
            return None
        pos = keys.index(key)
        raw = self._lines[pos]
        value = _line_value(raw).decode(_ENC, _ERR)
        cut = _first_top_level_comma(value) if key in LIST_HEADERS else -1
        lines = self._lines
        if cut < 0:
            self._keys = keys[:pos] + keys[pos + 1 :]
            self._lines = lines[:pos] + lines[pos + 1 :]
            self._changed(key)
            return value.strip()
        first, rest = value[:cut].strip(), value[cut + 1 :].strip()
        if not rest:
            self._keys = keys[:pos] + keys[pos + 1 :]
            self._lines = lines[:pos] + lines[pos + 1 :]
        else:
            line = raw[: raw.index(b":") + 1] + b" " + _enc(rest)
            self._lines = (*lines[:pos], line, *lines[pos + 1 :])
        self._changed(key)
        return first

    def _changed(self, key: str) -> None:
        if key == "via":
            self._vias = None
            self._top_via = None
        elif key in _EAGER:
            self._refresh(key)

    def _set_field(self, key: str, field: object) -> None:
        """Store an eager field already parsed from the header's (new) first line."""
        if key == "call-id":
            self._call_id = field  # type: ignore[assignment]
        elif key == "cseq":
            self._cseq = field  # type: ignore[assignment]
        elif key == "from":
            self._from_tag = field  # type: ignore[assignment]
        elif key == "to":
            self._to_tag = field  # type: ignore[assignment]
        elif key == "max-forwards":
            self._max_forwards = field  # type: ignore[assignment]

    def _refresh(self, key: str) -> None:
        """Recompute one eager field from the header lines."""
        value = self.get(key)
        if key == "call-id":
            self._call_id = value or ""
        elif key == "cseq":
            self._cseq = parse_cseq(value) if value is not None else CSeq(0, "")
        elif key == "from":
            self._from_tag = _name_addr_tag(value, "From") if value is not None else None
        elif key == "to":
            self._to_tag = _name_addr_tag(value, "To") if value is not None else None
        elif key == "max-forwards":
            self._max_forwards = _parse_max_forwards(_enc(value)) if value is not None else None

    # -- serialization ---------------------------------------------------------------------

    def _start_line(self) -> bytes:
        raise NotImplementedError

    def serialize(self) -> bytes:
        """Wire bytes: untouched headers byte for byte, Content-Length matching the body."""
        body = self.body
        length = b"%d" % len(body)
        keys = self._keys
        if _COMPILED:
            pos, count = _scan(keys, "content-length")
        else:
            count = keys.count("content-length")
            pos = keys.index("content-length") if count else -1
        if count == 1:
            raw = self._lines[pos]
            if _has_value(raw, length) if _COMPILED else _line_value(raw) == length:
                return b"\r\n".join([self._start_line(), *self._lines, b"", body])
            lines = list(self._lines)
            lines[pos] = raw[: raw.index(b":") + 1] + b" " + length
        elif count == 0:
            lines = [*self._lines, b"Content-Length: " + length]
        else:
            # Duplicates (equal values, or the parser would have refused them) collapse.
            pos = keys.index("content-length")
            raw = self._lines[pos]
            lines = [
                line for k, line in zip(keys, self._lines, strict=True) if k != "content-length"
            ]
            lines.insert(pos, raw[: raw.index(b":") + 1] + b" " + length)
        return b"\r\n".join([self._start_line(), *lines, b"", body])

    def __bytes__(self) -> bytes:
        return self.serialize()

    def copy(self) -> Self:
        """An independent copy: editing it never changes this message."""
        raise NotImplementedError

    def _header_key_values(self) -> list[tuple[str, bytes]]:
        return [
            (k, _line_value(line))
            for k, line in zip(self._keys, self._lines, strict=True)
            if k != "content-length"
        ]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Message) or type(self) is not type(other):
            return NotImplemented
        return (
            self._start_line() == other._start_line()
            and self._header_key_values() == other._header_key_values()
            and self.body == other.body
        )

    __hash__ = None  # type: ignore[assignment]

    def _fill(self, keys: tuple[str, ...], lines: tuple[bytes, ...], body: bytes, call_id: str,
              cseq: CSeq | None, from_tag: str | None, to_tag: str | None,
              max_forwards: int | None) -> None:
        # Arguments, not one tuple built per message and unpacked (ninth round: 9-10 such
        # tuples per call); a copy shares the tuples (immutable) until either side edits.
        self._keys = keys
        self._lines = lines
        self.body = body
        self._call_id = call_id
        self._cseq = cast(CSeq, cseq)  # given with `keys` (the constructors' contract)
        self._from_tag = from_tag
        self._to_tag = to_tag
        self._max_forwards = max_forwards
        self._vias = None
        self._top_via = None

    def _init_headers(self, headers: Iterable[tuple[str, str]], body: bytes) -> None:
        keys: list[str] = []
        lines: list[bytes] = []
        for name, value in headers:
            _check_value(value)
            key = _key(name)
            keys.append(key)
            lines.append(_enc(f"{canonical_of_key(key)}: {value}"))
        self._keys = tuple(keys)
        self._lines = tuple(lines)
        self.body = body
        self._vias = None
        self._top_via = None
        for key in ("call-id", "cseq", "from", "to", "max-forwards"):
            self._refresh(key)


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
        start: bytes | None = None,
        keys: tuple[str, ...] | None = None,
        lines: tuple[bytes, ...] = (),
        call_id: str = "",
        cseq: CSeq | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        max_forwards: int | None = None,
    ) -> None:
        """`headers` as (name, value) pairs, checked; or `keys` with `lines` and the routing
        fields read from them (`call_id`, `cseq`: required with `keys`, ...) already checked
        (the parser, a copy), used as they are instead of `headers`.  `start`: the
        request line these method and URI were read from, when it is exactly
        `method SP uri SP SIP/2.0` (the parser's fast path), written back as it is.
        The parser and the copies pass all of these by position: by keyword, the
        interpreted rendering matched each name per message (+0.6% instructions a call)."""
        self.method = method
        self._uri = uri
        self._parsed_uri = None
        self._raw_start = start
        self._raw_of = method
        if keys is None:
            self._init_headers(headers, body)
        else:
            self._fill(keys, lines, body, call_id, cseq, from_tag, to_tag, max_forwards)

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
        self._raw_start = None

    @property
    def parsed_uri(self) -> Uri:
        """The Request-URI parsed (cached); raises 400 when it is malformed."""
        if self._parsed_uri is None:
            self._parsed_uri = parse_uri(self._uri, "Request-URI")
        return self._parsed_uri

    def validate(self, known: ValidatedLines | None = None) -> None:
        """Parse every modelled part, Request-URI included."""
        if self.parsed_uri.headers:
            # RFC 3261 §19.1.5: headers belong to a URI used to form a request, never to a
            # Request-URI (RFC 4475 §3.1.2.11).
            raise bad_request("headers in the Request-URI")
        super().validate(known)

    def _start_line(self) -> bytes:
        raw = self._raw_start
        if raw is not None and self.method is self._raw_of:
            return raw
        return _enc(f"{self.method} {self._uri} SIP/2.0")

    def copy(self) -> Request:
        twin = Request(self.method, self._uri, (), self.body,
                       self._raw_start if self.method is self._raw_of else None,
                       self._keys, self._lines, self._call_id, self._cseq, self._from_tag,
                       self._to_tag, self._max_forwards)
        # A copy of the parsed Request-URI, not a second parse: a proxy copies every
        # request it forwards and then reads its URI for the next hop (§16.6).
        parsed = self._parsed_uri
        if parsed is not None:
            twin._parsed_uri = parsed.copy()
        return twin

    def forwarded(self, uri: str, record_routes: tuple[str, ...], transport: str, host: str,
                  port: int, branch: str, extra: tuple[str, str] | None = None
                  ) -> Request | None:
        """The copy a proxy sends on (RFC 3261 §16.6 steps 1-4 and 8), built in one pass:
        `uri` as its Request-URI, Max-Forwards decremented (`Max-Forwards: 70` appended
        when absent), `record_routes` (topmost first) above the first Record-Route line (at
        the top of the header block without one), and our Via above the first Via, as
        `push_via(transport, host, port, branch, extra)` writes it.

        The same bytes and fields as `copy()` then `set_uri`, `set_header("Max-Forwards")`,
        `add_header("Record-Route", v)` for each value bottom first, and `push_via`, without
        rebuilding the header tuples at each edit.  The Request-URI is not parsed (read on
        demand).  None, nothing built, when Max-Forwards has several lines or is below 1,
        or there is no Via: the caller makes those edits one by one."""
        keys = self._keys
        lines = self._lines
        mf = self._max_forwards
        if _COMPILED:
            m, n = _scan(keys, "max-forwards")
            r = _first(keys, "record-route")
            v = _first(keys, "via")
        else:
            n = keys.count("max-forwards")
            m = keys.index("max-forwards") if n else -1
            r = keys.index("record-route") if "record-route" in keys else -1
            v = keys.index("via") if "via" in keys else -1
        if n > 1 or v < 0 or (mf is None) != (n == 0) or (mf is not None and mf < 1):
            return None
        if uri != self._uri and (not uri or any(ch in uri for ch in " \t\r\n")):
            raise ValueError(f"invalid Request-URI {uri!r}")
        params: dict[str, str | None] = {"branch": branch}
        suffix = ""
        if extra is not None:
            params[extra[0]] = extra[1]
            suffix = f";{extra[0]}={extra[1]}"
        via_value = f"SIP/2.0/{transport} {host}:{port};branch={branch}{suffix}"
        _check_value(via_value)
        out_keys = list(keys)
        out_lines = list(lines)
        if mf is None:
            mf = 70
            out_keys.append("max-forwards")
            out_lines.append(b"Max-Forwards: 70")
        else:
            mf -= 1
            out_lines[m] = b"Max-Forwards: %d" % mf
        rr_keys: list[str] = []
        rr_lines: list[bytes] = []
        for value in record_routes:
            _check_value(value)
            rr_keys.append("record-route")
            rr_lines.append(_enc("Record-Route: " + value))
        at = r if r >= 0 else 0
        via_line = _enc("Via: " + via_value)
        if at > v:  # the later position first: the earlier one stays valid
            out_keys[at:at] = rr_keys
            out_lines[at:at] = rr_lines
            out_keys.insert(v, "via")
            out_lines.insert(v, via_line)
        else:
            out_keys.insert(v, "via")
            out_lines.insert(v, via_line)
            out_keys[at:at] = rr_keys
            out_lines[at:at] = rr_lines
        # The received start line is written back as read when the Request-URI stays (an
        # in-dialog request on its route set), as `copy()` does.
        start = self._raw_start if uri == self._uri and self.method is self._raw_of else None
        twin = Request(self.method, uri, (), self.body, start, tuple(out_keys),
                       tuple(out_lines), self._call_id, self._cseq, self._from_tag,
                       self._to_tag, mf)
        twin._top_via = Via(transport, host, port, params)
        return twin

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
        start: bytes | None = None,
        keys: tuple[str, ...] | None = None,
        lines: tuple[bytes, ...] = (),
        call_id: str = "",
        cseq: CSeq | None = None,
        from_tag: str | None = None,
        to_tag: str | None = None,
        max_forwards: int | None = None,
    ) -> None:
        """As `Request`: `headers` checked, or `keys` and the rest already checked used as
        they are;
        `start` the status line exactly `SIP/2.0 SP status SP reason`, kept as it is."""
        if not 100 <= status <= 699:
            raise ValueError(f"status {status} outside 100-699")
        self.status = status
        self.reason = reason_phrase(status) if reason is None else reason
        self._raw_start = start
        self._raw_of = self.reason
        if keys is None:
            self._init_headers(headers, body)
        else:
            self._fill(keys, lines, body, call_id, cseq, from_tag, to_tag, max_forwards)

    def _start_line(self) -> bytes:
        raw = self._raw_start
        if raw is not None and self.reason is self._raw_of and _status_of(raw) == self.status:
            return raw
        return b"SIP/2.0 %d " % self.status + _enc(self.reason)

    def copy(self) -> Response:
        raw = self._raw_start
        if raw is not None and (self.reason is not self._raw_of or _status_of(raw) != self.status):
            raw = None
        return Response(self.status, self.reason, (), self.body, raw, self._keys,
                        self._lines, self._call_id, self._cseq, self._from_tag,
                        self._to_tag, self._max_forwards)

    def __repr__(self) -> str:
        return f"<Response {self.status} {self.reason} call-id={self._call_id!r}>"


def _status_of(start: bytes) -> int:
    """The status code of a status line `SIP/2.0 ddd ...` (three digits at 8-10)."""
    return (start[8] - 48) * 100 + (start[9] - 48) * 10 + (start[10] - 48)


def _line_value(line: bytes) -> bytes:
    """The value of a raw header line: after the first colon, unfolded, stripped."""
    value = line.partition(b":")[2]
    if _LF in value:
        value = b" ".join([part.strip() for part in value.split(b"\n")])
    return value.strip(b" \t")


def _has_value(line: bytes, value: bytes) -> bool:
    """`_line_value(line) == value` (compiled rendering): for the usual `Name: value` an int
    loop from the end, no partition tuple and no slices; any other spelling the general way."""
    n = len(line)
    m = len(value)
    start = n - m
    if start >= 2 and line[start - 1] == _SP and line[start - 2] == _COLON:
        i = 0
        while i < m and line[start + i] == value[i]:
            i += 1
        if i == m:
            return True
    return _line_value(line) == value


def _count_routing(counts: dict[str, int], key: str, n: int) -> int:
    """Add `n` values of routing header `key`; 513 once over `MAX_ROUTING_VALUES`."""
    total = counts.get(key, 0) + n
    if total > MAX_ROUTING_VALUES:
        raise SipParseError(513, f"over {MAX_ROUTING_VALUES} {canonical_of_key(key)} values")
    counts[key] = total
    return n


def _is_delta_seconds(text: str) -> bool:
    """delta-seconds of RFC 3261 §25.1 within 2^32-1 (RFC 4475 §3.1.2.4 overflows it)."""
    if not text.isdigit() or not text.isascii():
        return False
    digits = text.lstrip("0")
    return len(digits) <= 10 and int(digits or "0") <= 2**32 - 1


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
    digits = value.lstrip(b"0") or b"0"  # leading zeros are legal (RFC 4475 §3.1.1.1)
    if not value.isdigit() or len(digits) > 3 or int(digits) > 255:
        # RFC 3261 §20.22: 0-255; RFC 4475 §3.1.2.4 expects 400 for 300.
        raise bad_request(f"invalid Max-Forwards {_dec(value)!r}")
    return int(value)


__all__ = ["Message", "Request", "Response", "ValidatedLines"]
