"""name-addr / addr-spec values with header parameters (RFC 3261 §20.10, §25.1).

    [display-name] <URI> *(;param)        name-addr
    URI *(;param)                          addr-spec

In the addr-spec form every `;param` after the URI is a header parameter, never a URI
parameter (RFC 3261 §20.10); this is how `To: sip:bob@b.example;tag=1` carries its tag. The
display name is a quoted string (quoted-pairs resolved) or a sequence of tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shared.sip.errors import bad_request
from shared.sip.headers import find_quote_end, parse_params, quote, unquote
from shared.sip.uri import Uri, parse_uri

_TOKEN_SAFE = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~ "
)


@dataclass(eq=False, slots=True, init=False)
class NameAddr:
    """A URI with an optional display name and header parameters (`tag`, `expires`, ...)."""

    uri: Uri
    display_name: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    def __init__(self, uri: Uri, display_name: str | None = None,
                 params: dict[str, str | None] | None = None) -> None:
        # Written out (init=False): a dataclass's generated __init__ is interpreted Python
        # even in the compiled core, and a proxied call builds about five of these.
        self.uri = uri
        self.display_name = display_name
        self.params = {} if params is None else params

    @property
    def tag(self) -> str | None:
        """The `tag` parameter (RFC 3261 §19.3)."""
        return self.params.get("tag")

    def __str__(self) -> str:
        out = []
        if self.display_name is not None:
            name = self.display_name
            if name and all(ch in _TOKEN_SAFE for ch in name) and name.strip() == name:
                out.append(name + " ")
            else:
                out.append(quote(name) + " ")
        out.append(f"<{self.uri}>")
        for key, value in self.params.items():
            out.append(f";{key}" if value is None else f";{key}={value}")
        return "".join(out)

    def __repr__(self) -> str:
        return f"NameAddr({str(self)!r})"

    def copy(self) -> NameAddr:
        """An independent copy."""
        return NameAddr(self.uri.copy(), self.display_name, dict(self.params))


def parse_name_addr(text: str, what: str = "header") -> NameAddr:
    """Parse a name-addr or addr-spec with parameters. Raises 400 on defects."""
    # Fast path for the usual shapes: `<uri>;params`, `"Name" <uri>;params` without
    # quoted-pairs, `Name <uri>;params`; anything else takes the general path below.
    display: str | None = None
    rest = text
    if text[:1] == '"':
        q = text.find('"', 1)
        if q > 0 and text.find("\\", 1, q) < 0:
            display = text[1:q]
            rest = text[q + 1 :].lstrip()
    elif text[:1] != "<":
        lt = text.find("<")
        if lt > 0 and '"' not in text and ">" not in text[:lt]:
            display = text[:lt].strip() or None
            rest = text[lt:]
    if rest[:1] == "<" and '"' not in rest:
        gt = rest.find(">")
        if gt > 1 and rest.find("<", 1) < 0:
            uri_text = rest[1:gt]
            ptext = rest[gt + 1 :]
            if (not ptext or ptext[0] == ";") and uri_text.strip() == uri_text:
                return NameAddr(
                    parse_uri(uri_text, what), display, parse_params(ptext, what) if ptext else {}
                )
    return _parse_name_addr_general(text, what)


def _parse_name_addr_general(text: str, what: str) -> NameAddr:
    text = text.strip()
    if not text:
        raise bad_request(f"empty value in {what}")
    display: str | None = None
    rest = text
    if text[0] == '"':
        end = find_quote_end(text, 0, what)
        display = unquote(text[:end])
        rest = text[end:].lstrip()
        if not rest.startswith("<"):
            raise bad_request(f"display name without <URI> in {what}")
    else:
        lt = text.find("<")
        if lt >= 0:
            token = text[:lt].strip()
            if '"' in token or ">" in token:
                raise bad_request(f"malformed display name in {what}")
            display = token or None
            rest = text[lt:]
    if rest.startswith("<"):
        gt = rest.find(">")
        if gt < 0:
            raise bad_request(f"unterminated <URI> in {what}")
        uri_text = rest[1:gt]
        if uri_text != uri_text.strip():
            # LAQUOT/RAQUOT allow no whitespace inside the brackets (RFC 3261 §25.1,
            # RFC 4475 §3.1.2.14 suggests a 400).
            raise bad_request(f"whitespace inside <URI> in {what}")
        ptext = rest[gt + 1 :].strip()
        if ptext and ptext[0] != ";":
            raise bad_request(f"garbage after <URI> in {what}")
    else:
        uri_text, _, ptext = rest.partition(";")
        uri_text = uri_text.strip()
        if ">" in uri_text:
            raise bad_request(f"unbalanced > in {what}")
        if "?" in uri_text or "," in uri_text:
            # RFC 3261 §20.10: such a URI MUST be enclosed in <> (RFC 4475 §3.1.2.13).
            raise bad_request(f"URI with ? or , not enclosed in <> in {what}")
    if uri_text.startswith("<"):
        raise bad_request(f"nested <URI> in {what}")
    uri = parse_uri(uri_text, what)
    return NameAddr(uri, display, parse_params(ptext, what))
