"""FreeSWITCH boxes as OpenSIPS names them: `fs://[user]:password@host[:port]?...`.

OpenSIPS' freeswitch driver writes an Event Socket as `fs://[username]:password@host[:port]`
(default port 8021), and freeswitch_scripting adds the events to subscribe after a `?`:
`[fs://][[username]:password@]host[:port][?EV1[,EV2]...]`.  Both forms are accepted here,
plus named parameters for what SipMesh needs to dispatch calls to the box:

    fs://:ClueCon@10.0.0.10?CHANNEL_STATE,DTMF                      (OpenSIPS)
    fs://:ClueCon@10.0.0.11:8021?events=DTMF&group=media&sip=sip:10.0.0.11:5080

* `events`: FreeSWITCH event names republished as E_FREESWITCH (case-sensitive, as
  FreeSWITCH's; `CUSTOM sofia::register` style subclasses are kept whole);
* `group`: the dispatch group the box belongs to (`ctx.freeswitch.select(group)`);
* `sip`: where calls for the box go (its SIP profile), e.g. `sip:10.0.0.11:5080`.
  Without it the box takes no calls (events and commands only).

A box is known by `host:port` (its `id`); a URL without a password names a known box
(fs_api, fs_remove), as freeswitch_esl() accepts one for a socket already defined.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from urllib.parse import parse_qsl, unquote

DEFAULT_PORT = 8021
DEFAULT_GROUP = "default"


class BoxUrlError(ValueError):
    """An fs:// URL that cannot name a FreeSWITCH box."""


@dataclass(frozen=True)
class BoxSpec:
    """One FreeSWITCH Event Socket to keep connected, and what it is for."""

    host: str
    port: int = DEFAULT_PORT
    password: str = ""
    user: str = ""
    events: tuple[str, ...] = ()
    group: str = DEFAULT_GROUP
    sip_uri: str = ""
    source: str = "config"  # config | db | mi (where it was declared)
    extra: dict[str, str] = field(default_factory=dict, compare=False)

    @property
    def id(self) -> str:
        return box_id(self.host, self.port)

    def url(self, *, secret: bool = False) -> str:
        """The fs:// URL (password shown only with `secret`)."""
        auth = ""
        if self.password or self.user:
            auth = f"{self.user}:{self.password if secret else '***'}@"
        query = []
        if self.events:
            query.append("events=" + ",".join(self.events))
        if self.group != DEFAULT_GROUP:
            query.append(f"group={self.group}")
        if self.sip_uri:
            query.append(f"sip={self.sip_uri}")
        return f"fs://{auth}{self.id}" + ("?" + "&".join(query) if query else "")


def box_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_fs_url(text: str, *, source: str = "config", need_password: bool = True) -> BoxSpec:
    """A `BoxSpec` from an fs:// URL (the scheme itself is optional, as in OpenSIPS)."""
    url = text.strip()
    if not url:
        raise BoxUrlError("empty FreeSWITCH URL")
    if url.lower().startswith("fs://"):
        url = url[5:]
    elif "://" in url:
        raise BoxUrlError(f"not an fs:// URL: {text!r}")
    authority, _, query = url.partition("?")
    user = password = ""
    if "@" in authority:
        creds, _, authority = authority.rpartition("@")
        user, sep, password = creds.partition(":")
        if not sep:  # "secret@host": OpenSIPS reads a lone credential as the password
            user, password = "", creds
        user, password = unquote(user), unquote(password)
    host, port = _host_port(authority, text)
    if need_password and not password:
        raise BoxUrlError(f"a password is needed in {text!r} (fs://[user]:password@host)")
    events: tuple[str, ...] = ()
    group = DEFAULT_GROUP
    sip_uri = ""
    extra: dict[str, str] = {}
    if query:
        if "=" not in query:  # OpenSIPS: ?EV1,EV2
            events = split_events(unquote(query))
        else:
            for key, value in parse_qsl(query, keep_blank_values=True):
                if key == "events":
                    events = split_events(value)
                elif key == "group":
                    group = value.strip() or DEFAULT_GROUP
                elif key == "sip":
                    sip_uri = value.strip()
                else:
                    extra[key] = value
    if sip_uri and not sip_uri.lower().startswith(("sip:", "sips:")):
        raise BoxUrlError(f"sip= must be a SIP URI, not {sip_uri!r}")
    return BoxSpec(host, port, password, user, events, group, sip_uri, source, extra)


def names_port(text: str) -> bool:
    """Whether an fs:// URL (or `host[:port]`) spells out its port."""
    url = text.strip()
    if url.lower().startswith("fs://"):
        url = url[5:]
    authority = url.partition("?")[0].rpartition("@")[2].strip().rstrip("/")
    if authority.startswith("["):
        return "]:" in authority
    return ":" in authority


def _host_port(authority: str, text: str) -> tuple[str, int]:
    authority = authority.strip().rstrip("/")
    if not authority:
        raise BoxUrlError(f"no host in {text!r}")
    if authority.startswith("["):
        host, sep, rest = authority[1:].partition("]")
        if not sep:
            raise BoxUrlError(f"unclosed IPv6 address in {text!r}")
        port_text = rest[1:] if rest.startswith(":") else ""
        if rest and not rest.startswith(":"):
            raise BoxUrlError(f"bad address in {text!r}")
    else:
        host, _, port_text = authority.partition(":")
    if not host or any(c in host for c in " /\\@"):
        raise BoxUrlError(f"bad host in {text!r}")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError as exc:
            raise BoxUrlError(f"bad IPv6 address in {text!r}") from exc
    port = DEFAULT_PORT
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise BoxUrlError(f"bad port in {text!r}")
        port = int(port_text)
    return host.lower(), port


def split_events(text: str) -> tuple[str, ...]:
    """`A,B` or `A B` -> (A, B); a CUSTOM subclass stays with its event (`CUSTOM x::y`)."""
    names: list[str] = []
    for part in text.replace(";", ",").split(","):
        words = part.split()
        while words:
            word = words.pop(0)
            if word == "CUSTOM" and words and "::" in words[0]:
                word = f"{word} {words.pop(0)}"
            if word not in names:
                names.append(word)
    return tuple(names)


def events_param(value: object) -> tuple[str, ...]:
    """MI `events`: a JSON array of names, or one string of names (`A,B` or `A B`)."""
    if isinstance(value, list | tuple):
        found: list[str] = []
        for item in value:
            for name in split_events(str(item)):
                if name not in found:
                    found.append(name)
        return tuple(found)
    return split_events(str(value))
