"""Header field names and the lexical rules shared by all header values (RFC 3261 §7.3, §25.1).

Names are case-insensitive and some have a compact form (RFC 3261 §7.3.3, RFC 3841, RFC 4028,
RFC 3515, RFC 3892, RFC 3265, RFC 8224): `canonical_name` maps any spelling to the canonical
one (`call-id`, `i` -> `Call-ID`) and `header_key` to the lower-case key messages index by.

Values are split into several values only for headers whose grammar is a comma-separated list
(RFC 3261 §7.3.1); the split happens at top-level commas only, never inside a quoted string,
inside `<...>` or inside a comment `(...)`. Quoted strings honour quoted-pairs (`\\"`).
The split jumps between delimiters with one compiled character class (the only regular
expression of the package): per delimiter, not per character, in Python.
"""

from __future__ import annotations

import re
from typing import Final

from shared.sip.errors import bad_request

# Compact forms: RFC 3261 §7.3.3 (i m e l f s k t v c), RFC 3265 (o u), RFC 3515 (r),
# RFC 3892 (b), RFC 4028 (x), RFC 8224 (y), RFC 3841 (a j d).
COMPACT_FORMS: Final[dict[str, str]] = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
    "o": "event",
    "u": "allow-events",
    "r": "refer-to",
    "b": "referred-by",
    "x": "session-expires",
    "c": "content-type",
    "y": "identity",
    "a": "accept-contact",
    "j": "reject-contact",
    "d": "request-disposition",
}

CANONICAL_NAMES: Final[dict[str, str]] = {
    name.lower(): name
    for name in (
        "Accept", "Accept-Contact", "Accept-Encoding", "Accept-Language", "Alert-Info",
        "Allow", "Allow-Events", "Authentication-Info", "Authorization", "Call-ID",
        "Call-Info", "Contact", "Content-Disposition", "Content-Encoding",
        "Content-Language", "Content-Length", "Content-Type", "CSeq", "Date", "Diversion",
        "Error-Info", "Event", "Expires", "From", "History-Info", "Identity",
        "Identity-Info", "In-Reply-To", "Max-Breadth", "Max-Forwards", "MIME-Version",
        "Min-Expires", "Min-SE", "Organization", "P-Asserted-Identity",
        "P-Associated-URI", "P-Called-Party-ID", "P-Charging-Vector",
        "P-Preferred-Identity", "P-Access-Network-Info", "Path", "Priority", "Privacy",
        "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Require", "RAck", "Reason",
        "Record-Route", "Refer-To", "Referred-By", "Reject-Contact", "Replaces",
        "Reply-To", "Request-Disposition", "Require", "Retry-After", "Route", "RSeq",
        "Security-Client", "Security-Server", "Security-Verify", "Server", "Service-Route",
        "Session-Expires", "SIP-ETag", "SIP-If-Match", "Subject", "Subscription-State",
        "Supported", "Timestamp", "To", "Unsupported", "User-Agent", "Via", "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose ABNF is a comma-separated list (RFC 3261 §7.3.1 allows several values in one
# line only for these). Everything else - including unknown headers - is one value per line,
# because commas there are data (Date, Subject, digest credentials, User-Agent, ...).
LIST_HEADERS: Final[frozenset[str]] = frozenset(
    {
        "accept", "accept-contact", "accept-encoding", "accept-language", "alert-info",
        "allow", "allow-events", "call-info", "contact", "content-encoding",
        "content-language", "diversion", "error-info", "history-info", "in-reply-to",
        "p-asserted-identity", "p-associated-uri", "p-preferred-identity", "path",
        "proxy-require", "reason", "record-route", "reject-contact", "request-disposition",
        "require", "route", "security-client", "security-server", "security-verify",
        "service-route", "supported", "unsupported", "via", "warning",
    }
)

# Headers that may appear once only (RFC 3261 §20; RFC 4475 §3.1.4.8 "multi01").
SINGLE_VALUE_HEADERS: Final[frozenset[str]] = frozenset(
    {"call-id", "to", "from", "cseq", "max-forwards"}
)


def header_key(name: str) -> str:
    """Lower-case index key of a header name, compact forms expanded (`I` -> `call-id`)."""
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(name: str) -> str:
    """The canonical spelling of a header name (`call-id` -> `Call-ID`, `x-foo` -> `X-Foo`)."""
    key = header_key(name)
    known = CANONICAL_NAMES.get(key)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def canonical_of_key(key: str) -> str:
    """`canonical_name` for an already lower-cased, expanded key."""
    known = CANONICAL_NAMES.get(key)
    if known is not None:
        return known
    return "-".join(part[:1].upper() + part[1:] for part in key.split("-"))


def find_quote_end(text: str, start: int, what: str) -> int:
    """Index just past the quoted string that opens at `text[start] == '"'`.

    Quoted-pairs (`\\x`) are skipped (RFC 3261 §25.1); raises 400 when the string never ends.
    """
    i = start + 1
    n = len(text)
    while True:
        q = text.find('"', i)
        if q < 0:
            raise bad_request(f"unterminated quoted string in {what}")
        bs = text.find("\\", i, q)
        if bs < 0:
            return q + 1
        # A backslash before the quote: skip the escaped character and keep looking.
        i = bs + 2
        if i > n:
            raise bad_request(f"unterminated quoted string in {what}")


_DELIMS = {sep: re.compile("[" + re.escape('"<>()' + sep) + "]") for sep in ",;"}


def split_top_level(text: str, sep: str = ",", what: str = "header",
                    limit: int = 0) -> list[str]:
    """Split at `sep` outside quoted strings, `<...>` and `(...)`; parts are stripped.

    Empty parts (`a,,b`) are dropped, as RFC 7230 §7 list rules allow for robustness.
    With `limit`, the split stops once it has more than `limit` parts (the caller only
    needs to know the list is too long).
    """
    if sep not in text:
        if '"' in text:
            _check_quotes(text, what)
        part = text.strip()
        return [part] if part else []
    if '"' not in text and "<" not in text and "(" not in text:
        return [p for p in (s.strip() for s in text.split(sep)) if p]
    # Jump from one delimiter to the next (a C-speed scan) rather than visiting every
    # character: a 60 KB Route list costs ~1 ms, not ~20 ms.
    parts: list[str] = []
    depth_angle = 0
    depth_paren = 0
    begin = 0
    skip_to = 0
    delims = _DELIMS.get(sep) or re.compile("[" + re.escape('"<>()' + sep) + "]")
    for match in delims.finditer(text):
        i = match.start()
        if i < skip_to:
            continue  # inside a quoted string
        ch = text[i]
        if ch == '"':
            skip_to = find_quote_end(text, i, what)
        elif ch == "<":
            depth_angle += 1
        elif ch == ">":
            if depth_angle:
                depth_angle -= 1
        elif ch == "(":
            depth_paren += 1
        elif ch == ")":
            if depth_paren:
                depth_paren -= 1
        elif ch == sep and not depth_angle and not depth_paren:
            part = text[begin:i].strip()
            if part:
                parts.append(part)
                if limit and len(parts) > limit:
                    return parts
            begin = i + 1
    part = text[begin:].strip()
    if part:
        parts.append(part)
    return parts


def _check_quotes(text: str, what: str) -> None:
    i = text.find('"')
    while i >= 0:
        i = text.find('"', find_quote_end(text, i, what))


def unquote(value: str) -> str:
    """The content of a quoted string with quoted-pairs resolved; other text stripped as is."""
    value = value.strip()
    if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
        inner = value[1:-1]
        if "\\" not in inner:
            return inner
        out: list[str] = []
        i = 0
        while i < len(inner):
            ch = inner[i]
            if ch == "\\" and i + 1 < len(inner):
                out.append(inner[i + 1])
                i += 2
                continue
            out.append(ch)
            i += 1
        return "".join(out)
    return value


def quote(value: str) -> str:
    """A quoted string for `value`, escaping `"` and `\\` as quoted-pairs."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def parse_params(text: str, what: str = "header") -> dict[str, str | None]:
    """`;name=value;flag` -> {name: value, flag: None}; names lower-cased (RFC 3261 §7.3.1).

    `text` is what follows the first `;` (or may start with it). Values keep their quotes so
    a re-rendered parameter reads exactly as it did; `unquote` gives the content.
    """
    params: dict[str, str | None] = {}
    if not text:
        return params
    if '"' not in text and " " not in text and "\t" not in text:
        # Fast path: no quoting, no linear whitespace to strip.
        for piece in text.split(";"):
            if piece:
                name, eq, value = piece.partition("=")
                if name:
                    params[name.lower()] = value if eq else None
        return params
    if '"' in text:
        pieces = split_top_level(text, ";", what)
    else:
        pieces = text.split(";")
    for piece in pieces:
        name, eq, value = piece.partition("=")
        name = name.strip()
        if not name:
            continue
        params[name.lower()] = value.strip() if eq else None
    return params


def render_params(params: dict[str, str | None]) -> str:
    """`{a: "1", lr: None}` -> `;a=1;lr`."""
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())
