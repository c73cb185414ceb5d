"""SIP, SIPS and tel URIs (RFC 3261 §19.1, RFC 3966, RFC 5118) and their comparison.

`parse_uri` splits a URI at its delimiters without a regular expression:

    sip:user:password@host:port;uri-parameters?headers

The userinfo ends at the last `@` (the user part may itself contain `;` and `?`, RFC 3261
§25.1 `user-unreserved`; header values must escape `@`). IPv6 references are written in
brackets (`[2001:db8::1]:5060`, RFC 3261 §19.1.1 / RFC 5118 §4.1); a bare IPv6 address without
brackets is rejected because its colons cannot be told from the port separator. A host is
an RFC 3261 hostname (letters, digits, `-`, and `_` tolerated) or an IPv4 address: escapes,
non-ASCII bytes or control characters in a host are a 400.

Fields are kept as written (escapes included) so `str(uri)` reproduces the text; comparison
(`Uri.equivalent`, RFC 3261 §19.1.4) unescapes `%HEX` (except reserved characters), compares
the userinfo case-sensitively, host/scheme/parameters case-insensitively, applies the
parameter rules (user, ttl, method, maddr, transport must match when present in either) and
requires equal header components. IPv6 hosts compare as addresses, so `[2001:db8::9:1]`
equals `[2001:db8::9:01]` (text differs, the address does not).

Any other scheme (`urn:`, `http:`, ...) is kept as an opaque URI, never rejected (RFC 3261
§8.2.2.1 leaves the 416 decision to the element that must route on it).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from shared.sip.errors import bad_request

_RESERVED = frozenset(";/?:@&=+$,")
_COMMON_SCHEMES = frozenset({"sip", "sips", "tel"})
_HEX = frozenset("0123456789abcdefABCDEF")
_TEL_VISUAL = str.maketrans("", "", "-.()")
# RFC 3261 §25.1 hostname: alphanum and "-" in dot-separated labels (IPv4 addresses are
# spelled with the same characters). "_" is tolerated, as many stacks do; anything else -
# `%` escapes, non-ASCII (IDNA is for DNS, not SIP hosts), NUL, CR, whitespace - is a 400.
_HOST_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._")


_GOOD_HOSTS: dict[str, bool] = {}  # verdicts remembered: a proxy sees the same few hosts


def valid_hostname(host: str) -> bool:
    """True for an RFC 3261 hostname or IPv4 address (labels of 1-63 characters)."""
    known = _GOOD_HOSTS.get(host)
    if known is not None:
        return known
    ok = bool(host) and _HOST_CHARS.issuperset(host) and not (
        host[0] in ".-" or ".." in host or "-." in host or ".-" in host) and (
        len(host) <= 63 or (len(host) <= 254
                            and all(len(label) <= 63 for label in host.split("."))))
    if len(_GOOD_HOSTS) >= 4096:
        _GOOD_HOSTS.clear()  # bounded: many distinct hosts only cost the check again
    _GOOD_HOSTS[host] = ok
    return ok



@dataclass(eq=False, slots=True, init=False)
class Uri:
    """A parsed URI. `user`/`password`/`host` keep their `%HEX` escapes as written."""

    scheme: str
    user: str | None = None
    password: str | None = None
    host: str = ""
    port: int | None = None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)
    opaque: str | None = None  # text after `scheme:` of a URI this module does not model

    def __init__(self, scheme: str, user: str | None = None, password: str | None = None,
                 host: str = "", port: int | None = None,
                 params: dict[str, str | None] | None = None,
                 headers: dict[str, str] | None = None, opaque: str | None = None) -> None:
        # Written out (init=False): a dataclass's generated __init__ is interpreted Python
        # even in the compiled core, and a proxied call builds about ten of these.
        self.scheme = scheme
        self.user = user
        self.password = password
        self.host = host
        self.port = port
        self.params = {} if params is None else params
        self.headers = {} if headers is None else headers
        self.opaque = opaque

    @property
    def is_sip(self) -> bool:
        """True for `sip:` and `sips:` URIs."""
        return self.scheme in ("sip", "sips")

    @property
    def transport(self) -> str | None:
        """The `transport` URI parameter, lower-cased (RFC 3261 §19.1.1)."""
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def lr(self) -> bool:
        """Loose routing flag (RFC 3261 §19.1.1, §16.12)."""
        return "lr" in self.params

    @property
    def host_port(self) -> str:
        """`host` or `host:port` as written in the URI."""
        return self.host if self.port is None else f"{self.host}:{self.port}"

    def __str__(self) -> str:
        if self.opaque is not None:
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.scheme == "tel":
            out.append(self.user or "")
        else:
            if self.user is not None:
                out.append(self.user)
                if self.password is not None:
                    out.append(":" + self.password)
                out.append("@")
            out.append(self.host)
            if self.port is not None:
                out.append(f":{self.port}")
        for key, value in self.params.items():
            out.append(f";{key}" if value is None else f";{key}={value}")
        if self.headers:
            out.append("?" + "&".join(f"{k}={v}" for k, v in self.headers.items()))
        return "".join(out)

    def __repr__(self) -> str:
        return f"Uri({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Uri):
            return NotImplemented
        return self.equivalent(other)

    def __hash__(self) -> int:
        # Only fields every equivalent URI shares (parameters may be ignored by `equivalent`).
        if self.scheme == "tel":
            return hash(("tel", (self.user or "").translate(_TEL_VISUAL).lower()))
        if self.opaque is not None:
            return hash((self.scheme, self.opaque))
        return hash((self.scheme, _unescape(self.user or ""), _host_key(self.host), self.port))

    def copy(self) -> Uri:
        """An independent copy (parameters and headers dicts included)."""
        return Uri(
            self.scheme, self.user, self.password, self.host, self.port,
            dict(self.params), dict(self.headers), self.opaque,
        )

    def equivalent(self, other: Uri) -> bool:
        """URI comparison of RFC 3261 §19.1.4 (sip/sips), RFC 3966 §4 (tel)."""
        if self.scheme != other.scheme:
            return False
        if self.opaque is not None or other.opaque is not None:
            return (self.opaque or "") == (other.opaque or "")
        if self.scheme == "tel":
            return _tel_equivalent(self, other)
        # Userinfo compares case-sensitively after unescaping (§19.1.4 bullets 2 and 6).
        if _unescape(self.user or "") != _unescape(other.user or ""):
            return False
        if (self.user is None) != (other.user is None):
            return False
        if _unescape(self.password or "") != _unescape(other.password or ""):
            return False
        if _host_key(self.host) != _host_key(other.host):
            return False
        # "A URI omitting any component with a default value will not match a URI
        # explicitly containing that component with its default value" (port 5060 included).
        if self.port != other.port:
            return False
        if not _params_equivalent(self.params, other.params):
            return False
        return _headers_equivalent(self.headers, other.headers)


def parse_uri(text: str, what: str = "URI") -> Uri:
    """Parse a SIP/SIPS/tel URI; any other scheme is kept opaque. Raises 400 on defects."""
    # Fast path: `sip:[user[:password]@]host[:port][;params]` - no headers, no IPv6, no
    # whitespace or control characters (`isprintable` rejects TAB, CR, LF and NUL).
    if text[:4] == "sip:":
        rest = text[4:]
        if "?" not in rest and "[" not in rest and " " not in rest and rest.isprintable():
            userinfo, at, hostpart = rest.rpartition("@")
            user: str | None = None
            password: str | None = None
            if at:
                user, pcolon, pw = userinfo.partition(":")
                if pcolon:
                    password = pw
            hostport, _, ptext = hostpart.partition(";")
            host, pcolon, port_text = hostport.partition(":")
            good = _GOOD_HOSTS.get(host)  # inlined `valid_hostname`: a hot path
            if (
                (user or not at)
                and (not pcolon or (port_text.isdigit() and len(port_text) < 5))
                and port_text.isascii()
                and (good if good is not None else valid_hostname(host))
            ):
                return Uri(
                    "sip",
                    user,
                    password,
                    host,
                    int(port_text) if pcolon else None,
                    _params(ptext) if ptext else {},
                    {},
                    None,
                )
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme:
        raise bad_request(f"no scheme in {what} {text[:80]!r}")
    if scheme != "sip":
        scheme = scheme.lower()
        if scheme not in _COMMON_SCHEMES and not _is_scheme(scheme):
            raise bad_request(f"invalid scheme in {what} {text[:80]!r}")
    if " " in rest or "\t" in rest or "\r" in rest or "\n" in rest:
        raise bad_request(f"whitespace inside {what}")
    if scheme == "sip" or scheme == "sips":
        return _parse_sip(scheme, rest, what)
    if scheme == "tel":
        number, _, ptext = rest.partition(";")
        if not number:
            raise bad_request(f"empty telephone number in {what}")
        return Uri("tel", user=number, params=_params(ptext))
    return Uri(scheme, opaque=rest)


def _is_scheme(scheme: str) -> bool:
    # scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )  (RFC 3986 §3.1)
    if not scheme[0].isalpha() or not scheme.isascii():
        return False
    return all(ch.isalnum() or ch in "+-." for ch in scheme)


def _parse_sip(scheme: str, rest: str, what: str) -> Uri:
    # The userinfo ends at the last "@": the user part may hold "?" and ";" (RFC 4475
    # §3.1.1.2), while a header value must escape "@". A sloppy `?to=a@b` is still read as
    # headers when the text before the first "?" already holds an "@".
    at = rest.rfind("@")
    qmark = rest.find("?")
    if 0 <= qmark < at:
        before = rest.rfind("@", 0, qmark)
        if before >= 0:
            at = before
    user: str | None = None
    password: str | None = None
    if at >= 0:
        userinfo = rest[:at]
        rest = rest[at + 1 :]
        user, pcolon, pw = userinfo.partition(":")
        if pcolon:
            password = pw
        if not user:
            raise bad_request(f"empty user part in {what}")
    hostpart, _, htext = rest.partition("?")
    headers: dict[str, str] = {}
    if htext:
        for item in htext.split("&"):
            hname, _, hvalue = item.partition("=")
            if hname:
                headers[hname] = hvalue
    if hostpart.startswith("["):
        close = hostpart.find("]")
        if close < 0:
            raise bad_request(f"unterminated IPv6 reference in {what}")
        host = hostpart[: close + 1]
        _check_ipv6(host, what)
        after = hostpart[close + 1 :]
        portpart, _, ptext = after.partition(";")
        if portpart:
            if not portpart.startswith(":"):
                raise bad_request(f"garbage after IPv6 reference in {what}")
            port = _port(portpart[1:], what)
        else:
            port = None
    else:
        hostport, _, ptext = hostpart.partition(";")
        host, pcolon, ptxt = hostport.partition(":")
        if pcolon and ":" in ptxt:
            raise bad_request(f"IPv6 address without brackets in {what} (RFC 5118)")
        port = _port(ptxt, what) if pcolon else None
        if not host:
            raise bad_request(f"empty host in {what}")
        if not valid_hostname(host):
            raise bad_request(f"invalid host {host[:60]!r} in {what}")
    return Uri(scheme, user, password, host, port, _params(ptext) if ptext else {}, headers, None)


def _params(ptext: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    if ptext:
        for piece in ptext.split(";"):
            name, eq, value = piece.partition("=")
            if name:
                params[name.lower()] = value if eq else None
    return params


def _port(text: str, what: str) -> int:
    if not text.isdigit() or len(text) > 5 or not text.isascii():
        raise bad_request(f"invalid port {text!r} in {what}")
    port = int(text)
    if port > 65535:
        raise bad_request(f"port {port} out of range in {what}")
    return port


def ipv6_address(text: str) -> ipaddress.IPv6Address | None:
    """The address of an IPv6 reference's content (no brackets), or None when invalid.

    RFC 5118 §4.10: RFC 3261's ABNF lets an IPv4-suffixed address be written with three
    colons (`2001:db8:::192.0.2.1`); such references are tolerated and read as the
    two-colon form, as the RFC asks robust parsers to do."""
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        pass
    if ":::" in text and text.count(":::") == 1 and "." in text.rpartition(":")[2]:
        try:
            return ipaddress.IPv6Address(text.replace(":::", "::"))
        except ValueError:
            return None
    return None


def _check_ipv6(host: str, what: str) -> None:
    if ipv6_address(host[1:-1]) is None:
        raise bad_request(f"invalid IPv6 reference {host} in {what}")


def _host_key(host: str) -> str:
    if host.startswith("["):
        addr = ipv6_address(host[1:-1])
        return "[" + addr.compressed + "]" if addr is not None else host.lower()
    return _unescape(host).lower()


def _unescape(text: str) -> str:
    """Resolve `%HEX` escapes except those of reserved characters (RFC 3261 §19.1.4)."""
    if "%" not in text:
        return text
    out: list[str] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "%" and i + 2 < n and text[i + 1] in _HEX and text[i + 2] in _HEX:
            decoded = chr(int(text[i + 1 : i + 3], 16))
            # Reserved characters keep their escape: `%3B` is data, `;` a delimiter.
            out.append(text[i : i + 3].upper() if decoded in _RESERVED else decoded)
            i += 3
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _params_equivalent(a: dict[str, str | None], b: dict[str, str | None]) -> bool:
    if any("%" in k for k in a) or any("%" in k for k in b):
        a = {_unescape(k).lower(): v for k, v in a.items()}
        b = {_unescape(k).lower(): v for k, v in b.items()}
    for key in a.keys() | b.keys():
        in_a = key in a
        in_b = key in b
        if in_a and in_b:
            va = _unescape(a[key] or "").lower()
            vb = _unescape(b[key] or "").lower()
            if va != vb:
                return False
        elif key in ("user", "ttl", "method", "maddr", "transport"):
            # §19.1.4: these never match when present in one URI only (transport too, per
            # the §19.1.4 example `sip:bob@biloxi.com` vs `...;transport=udp`).
            return False
    return True


def _headers_equivalent(a: dict[str, str], b: dict[str, str]) -> bool:
    if len(a) != len(b):
        return False
    norm_b = {k.lower(): _unescape(v) for k, v in b.items()}
    for key, value in a.items():
        other = norm_b.get(key.lower())
        if other is None or other != _unescape(value):
            return False
    return True


def _tel_equivalent(a: Uri, b: Uri) -> bool:
    # RFC 3966 §4: visual separators are ignored, parameters compare as a set.
    na = (a.user or "").translate(_TEL_VISUAL).lower()
    nb = (b.user or "").translate(_TEL_VISUAL).lower()
    if na != nb:
        return False
    pa = {k: (v or "").lower() for k, v in a.params.items()}
    pb = {k: (v or "").lower() for k, v in b.params.items()}
    return pa == pb


__all__ = ["Uri", "ipv6_address", "parse_uri", "valid_hostname"]
