"""Digest authentication: challenges, credentials and the response hash.

RFC 3261 §22.4 and §25.1 adopt HTTP Digest (RFC 2617); RFC 8760 brings RFC 7616's SHA-256
and SHA-512/256 algorithms to SIP. A challenge (`WWW-Authenticate`, `Proxy-Authenticate`)
and credentials (`Authorization`, `Proxy-Authorization`) are a scheme token followed by
comma-separated `name=value` pairs whose values may be quoted strings (commas inside quotes
are data), so the parameters are split with the top-level splitter of `headers`.  Every
phone's REGISTER carries credentials, so well-formed parameter lists take a one-regex path
(`_fast_params`); anything it does not match goes through the general splitter, which
gives the precise 400 reason.

The response (RFC 7616 §3.4.1):

    HA1 = H(username ":" realm ":" password)            (-sess: H(HA1 ":" nonce ":" cnonce))
    HA2 = H(method ":" uri)                             (auth-int: H(method ":" uri ":" H(body)))
    response = H(HA1 ":" nonce ":" nc ":" cnonce ":" qop ":" HA2)   with qop
    response = H(HA1 ":" nonce ":" HA2)                            without qop (RFC 2069)
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from shared.sip.errors import bad_request
from shared.sip.headers import find_quote_end, quote, split_top_level, unquote


# hashlib's named constructors (hashlib.md5 is OpenSSL's md5 bound once at import): a
# `hashlib.new(name, ...)` finds the algorithm by its name on every call, ~3 us more per
# hash, and a digest check is three or four hashes (issue 22, eighth round).
def _md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _sha512_256(data: bytes) -> str:
    return hashlib.new("sha512_256", data).hexdigest()


# Algorithm token (case-insensitive, RFC 7616 §3.3) -> hash function on bytes -> hex.
_ALGORITHMS: dict[str, Callable[[bytes], str]] = {
    "MD5": _md5,
    "SHA-256": _sha256,
}
try:  # SHA-512/256 depends on the OpenSSL build
    hashlib.new("sha512_256", b"")
    _ALGORITHMS["SHA-512-256"] = _sha512_256
except ValueError:  # pragma: no cover - depends on the platform
    pass

SUPPORTED_ALGORITHMS = frozenset(_ALGORITHMS) | frozenset(a + "-sess" for a in _ALGORITHMS)

# Parameters rendered without quotes (RFC 7616 §3.3/§3.4 grammar: tokens, not quoted strings).
_UNQUOTED_CHALLENGE = frozenset({"algorithm", "stale"})
_UNQUOTED_CREDENTIALS = frozenset({"algorithm", "nc", "qop"})


def _split_algorithm(algorithm: str) -> tuple[Callable[[bytes], str], bool]:
    name = algorithm.strip().upper()
    sess = name.endswith("-SESS")
    if sess:
        name = name[:-5]
    hasher = _ALGORITHMS.get(name)
    if hasher is None:
        raise ValueError(f"unsupported digest algorithm {algorithm!r}")
    return hasher, sess


def compute_response(
    *,
    username: str,
    password: str,
    realm: str,
    method: str,
    uri: str,
    nonce: str,
    algorithm: str = "MD5",
    qop: str | None = None,
    nc: str | None = None,
    cnonce: str | None = None,
    body: bytes = b"",
) -> str:
    """The `response` value of RFC 7616 §3.4.1 (qop `auth`, `auth-int` or none)."""
    h, sess = _split_algorithm(algorithm)
    ha1 = h(_raw(f"{username}:{realm}:{password}"))
    if sess:
        ha1 = h(_raw(f"{ha1}:{nonce}:{cnonce or ''}"))
    if qop == "auth-int":
        ha2 = h(_raw(f"{method}:{uri}:") + h(body).encode())
    else:
        ha2 = h(_raw(f"{method}:{uri}"))
    if qop:
        return h(_raw(f"{ha1}:{nonce}:{nc or ''}:{cnonce or ''}:{qop}:{ha2}"))
    return h(_raw(f"{ha1}:{nonce}:{ha2}"))


def verify_ha1(creds: DigestCredentials, ha1: str, method: str, body: bytes = b"") -> bool:
    """True when `creds.response` is right for the stored `ha1` (RFC 7616 §3.4.1 from
    H(username:realm:password) instead of the password; constant-time comparison).  The
    edge (Proxy-Authorization, its fallback path) and the registrar (SaveWithDigest) both
    check with this; an algorithm not supported is simply a wrong answer."""
    try:
        h, sess = _split_algorithm(creds.algorithm)
    except ValueError:
        return False
    if sess:
        ha1 = h(_raw(f"{ha1}:{creds.nonce}:{creds.cnonce or ''}"))
    if creds.qop == "auth-int":
        ha2 = h(_raw(f"{method}:{creds.uri}:") + h(body).encode())
    else:
        ha2 = h(_raw(f"{method}:{creds.uri}"))
    if creds.qop:
        expected = h(_raw(f"{ha1}:{creds.nonce}:{creds.nc or ''}:{creds.cnonce or ''}:"
                          f"{creds.qop}:{ha2}"))
    else:
        expected = h(_raw(f"{ha1}:{creds.nonce}:{ha2}"))
    response = creds.response.lower()
    # compare_digest refuses non-ASCII str: such an answer is simply wrong.
    return response.isascii() and hmac.compare_digest(expected, response)


# One `name = value` list element: a token-ish name, then a quoted string without
# quoted-pairs or bare text without blanks, then the comma or the end.  Lists with anything
# else (quoted-pairs, stray quotes, blanks inside a bare value) go the general way.
_PARAM = re.compile(r'\s*([^=,\s"]+)\s*=\s*(?:"([^"\\]*)"|([^\s",]*))\s*(?:,|\Z)')


def _fast_params(rest: str) -> dict[str, str] | None:
    """The parameters of a plain, well-formed list, or None (let the general path decide)."""
    params: dict[str, str] = {}
    pos = 0
    for m in _PARAM.finditer(rest):
        if m.start() != pos:
            return None  # something the pattern could not read was skipped
        quoted = m.group(2)
        params[m.group(1).lower()] = quoted if quoted is not None else m.group(3)
        pos = m.end()
    return params if pos == len(rest) else None


def _parse_auth(text: str, what: str) -> tuple[str, dict[str, str]]:
    text = text.strip()
    scheme, _, rest = text.partition(" ")
    if not scheme:
        raise bad_request(f"empty {what}")
    if scheme.lower() != "digest":
        raise bad_request(f"unsupported authentication scheme {scheme[:20]!r} in {what}")
    fast = _fast_params(rest)
    return scheme, fast if fast is not None else _general_params(rest, what)


def _general_params(rest: str, what: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in split_top_level(rest, ",", what):
        name, eq, value = item.partition("=")
        name = name.strip().lower()
        value = value.strip()
        if not eq or not name or " " in name:
            raise bad_request(f"malformed parameter {item[:40]!r} in {what}")
        if value.startswith('"') and find_quote_end(value, 0, what) != len(value):
            raise bad_request(f"malformed parameter {item[:40]!r} in {what}")
        params[name] = unquote(value)
    return params


def _render(scheme: str, values: dict[str, str], unquoted: frozenset[str]) -> str:
    parts = [f"{k}={v}" if k in unquoted else f"{k}={quote(v)}" for k, v in values.items()]
    return f"{scheme} " + ", ".join(parts)


@dataclass(slots=True)
class DigestChallenge:
    """`WWW-Authenticate` / `Proxy-Authenticate: Digest ...` (RFC 7616 §3.3)."""

    realm: str
    nonce: str
    algorithm: str = "MD5"
    qop: list[str] = field(default_factory=list)  # offered qop values, e.g. ["auth"]
    opaque: str | None = None
    stale: bool = False
    domain: str | None = None
    scheme: str = "Digest"
    extra: dict[str, str] = field(default_factory=dict)  # unknown parameters, kept

    def __str__(self) -> str:
        realm, nonce = self.realm, self.nonce
        if (not self.extra and self.domain is None and self.opaque is None
                and '"' not in realm and "\\" not in realm
                and '"' not in nonce and "\\" not in nonce):
            # What a proxy sends with every 401/407: rendered in one step, as below.
            stale = ", stale=true" if self.stale else ""
            qop = f', qop="{",".join(self.qop)}"' if self.qop else ""
            return (f'{self.scheme} realm="{realm}", nonce="{nonce}"{stale}, '
                    f"algorithm={self.algorithm}{qop}")
        return self._render_general()

    def _render_general(self) -> str:
        values = {"realm": self.realm, "nonce": self.nonce}
        if self.domain is not None:
            values["domain"] = self.domain
        if self.opaque is not None:
            values["opaque"] = self.opaque
        if self.stale:
            values["stale"] = "true"
        values["algorithm"] = self.algorithm
        if self.qop:
            values["qop"] = ",".join(self.qop)
        values.update(self.extra)
        return _render(self.scheme, values, _UNQUOTED_CHALLENGE)


@dataclass(slots=True)
class DigestCredentials:
    """`Authorization` / `Proxy-Authorization: Digest ...` (RFC 7616 §3.4)."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str = "MD5"
    qop: str | None = None
    nc: str | None = None
    cnonce: str | None = None
    opaque: str | None = None
    scheme: str = "Digest"
    extra: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        values = {
            "username": self.username,
            "realm": self.realm,
            "nonce": self.nonce,
            "uri": self.uri,
            "response": self.response,
            "algorithm": self.algorithm,
        }
        if self.cnonce is not None:
            values["cnonce"] = self.cnonce
        if self.opaque is not None:
            values["opaque"] = self.opaque
        if self.qop is not None:
            values["qop"] = self.qop
        if self.nc is not None:
            values["nc"] = self.nc
        values.update(self.extra)
        return _render(self.scheme, values, _UNQUOTED_CREDENTIALS)

    def expected_response(self, password: str, method: str, body: bytes = b"") -> str:
        """The response these credentials must carry for `password`."""
        return compute_response(
            username=self.username, password=password, realm=self.realm, method=method,
            uri=self.uri, nonce=self.nonce, algorithm=self.algorithm, qop=self.qop,
            nc=self.nc, cnonce=self.cnonce, body=body,
        )

    def verify(self, password: str, method: str, body: bytes = b"") -> bool:
        """True when `response` is right for `password` (constant-time comparison)."""
        try:
            expected = self.expected_response(password, method, body)
        except ValueError:
            return False
        response = self.response.lower()
        # compare_digest refuses non-ASCII str: such an answer is simply wrong.
        return response.isascii() and hmac.compare_digest(expected, response)


def parse_challenge(text: str, what: str = "WWW-Authenticate") -> DigestChallenge:
    """Parse a Digest challenge; raises 400 when realm or nonce is missing."""
    scheme, params = _parse_auth(text, what)
    try:
        realm = params.pop("realm")
        nonce = params.pop("nonce")
    except KeyError as missing:
        raise bad_request(f"missing {missing.args[0]} in {what}") from None
    qop = [q.strip() for q in params.pop("qop", "").split(",") if q.strip()]
    return DigestChallenge(
        realm=realm,
        nonce=nonce,
        algorithm=params.pop("algorithm", "MD5"),
        qop=qop,
        opaque=params.pop("opaque", None),
        stale=params.pop("stale", "false").lower() == "true",
        domain=params.pop("domain", None),
        scheme=scheme,
        extra=params,
    )


def parse_credentials(text: str, what: str = "Authorization") -> DigestCredentials:
    """Parse Digest credentials; raises 400 when a required parameter is missing."""
    scheme, params = _parse_auth(text, what)
    try:
        username = params.pop("username")
        realm = params.pop("realm")
        nonce = params.pop("nonce")
        uri = params.pop("uri")
        response = params.pop("response")
    except KeyError as missing:
        raise bad_request(f"missing {missing.args[0]} in {what}") from None
    qop = params.pop("qop", None)
    nc = params.pop("nc", None)
    cnonce = params.pop("cnonce", None)
    if qop is not None and (nc is None or cnonce is None):
        raise bad_request(f"qop without nc/cnonce in {what}")
    return DigestCredentials(
        username=username, realm=realm, nonce=nonce, uri=uri, response=response,
        algorithm=params.pop("algorithm", "MD5"), qop=qop, nc=nc, cnonce=cnonce,
        opaque=params.pop("opaque", None), scheme=scheme, extra=params,
    )


def answer_challenge(
    challenge: DigestChallenge,
    *,
    username: str,
    password: str,
    method: str,
    uri: str,
    cnonce: str,
    nc: int = 1,
    body: bytes = b"",
) -> DigestCredentials:
    """Credentials answering `challenge` (qop=auth when offered, RFC 7616 §3.4)."""
    qop: str | None = None
    if "auth" in challenge.qop:
        qop = "auth"
    elif "auth-int" in challenge.qop:
        qop = "auth-int"
    nc_text = f"{nc:08x}" if qop else None
    response = compute_response(
        username=username, password=password, realm=challenge.realm, method=method, uri=uri,
        nonce=challenge.nonce, algorithm=challenge.algorithm, qop=qop, nc=nc_text,
        cnonce=cnonce if qop else None, body=body,
    )
    return DigestCredentials(
        username=username, realm=challenge.realm, nonce=challenge.nonce, uri=uri,
        response=response, algorithm=challenge.algorithm, qop=qop, nc=nc_text,
        cnonce=cnonce if qop else None, opaque=challenge.opaque,
    )


def _raw(text: str) -> bytes:
    """Header text back to the bytes received (values are decoded with surrogateescape):
    what a digest or a hash covers, and never an error on bytes that are not UTF-8."""
    return text.encode("utf-8", "surrogateescape")
