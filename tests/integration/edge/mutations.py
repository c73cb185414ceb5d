"""Mutated SIP messages, and the oracle they are judged by (`sipmesh parse`'s verdict).

Shared by the property test (hypothesis draws the operations, so a failure shrinks to a
small one) and the fuzzing suite (a seeded `random.Random` draws them, thousands per run):
both build messages with `mutate(seed, ops)` from the same seeds and operations.

Seeds are messages a phone or a proxy sends (INVITE, REGISTER with credentials, in-dialog
BYE with a Route, OPTIONS, MESSAGE, a response) plus RFC 4475/5118 torture messages; `{n}`
makes Call-ID and branch unique per message, so messages never match each other's
transactions.  Operations are byte-level (flip, insert, delete, truncate, duplicate a
line) and header-level (a header value replaced by an evil one: NUL or CR in a host,
`%`-escapes, non-UTF-8 bytes, an IDNA-invalid name, stray `;` and `,`, IPv6 without
brackets or with an extra colon, a preloaded Route, huge numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from shared.sip import Request, SipParseError, parse_message

FIXTURES = Path(__file__).resolve().parents[2] / "unit" / "sip" / "fixtures"

# Hosts the fuzzing edge treats as local domains, each statically routed to a sink.
LOCAL_DOMAINS = ("example.com", "example.org", "example.net", "company.com",
                 "chair-dnrc.example.com", "registrar.example.com", "127.0.0.1")

_HEAD = ("Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-fz{n};rport\r\n"
         "Max-Forwards: 70\r\nFrom: \"Alice\" <sip:alice@example.com>;tag=f{n}\r\n")

SEEDS: list[bytes] = [
    (f"INVITE sip:bob@example.com SIP/2.0\r\n{_HEAD}To: <sip:bob@example.com>\r\n"
     "Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContact: <sip:alice@127.0.0.1:{port}>\r\n"
     "Content-Type: application/sdp\r\nContent-Length: 23\r\n\r\n"
     "v=0\r\no=- 1 1 IN IP4 1.2\r\n").encode(),
    (f"REGISTER sip:example.com SIP/2.0\r\n{_HEAD}To: <sip:alice@example.com>\r\n"
     "Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 2 REGISTER\r\n"
     "Contact: <sip:alice@127.0.0.1:{port}>;expires=3600\r\n"
     'Authorization: Digest username="alice", realm="example.com", nonce="0-1-2-3.abc", '
     'uri="sip:example.com", response="00112233445566778899aabbccddeeff", qop=auth, '
     "nc=00000001, cnonce=\"xyz\", algorithm=MD5\r\nContent-Length: 0\r\n\r\n").encode(),
    (f"BYE sip:bob@127.0.0.1:5999 SIP/2.0\r\n{_HEAD}To: <sip:bob@example.com>;tag=t{{n}}\r\n"
     "Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 3 BYE\r\n"
     "Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5998;lr>\r\n"
     'Proxy-Authorization: Digest username="alice", realm="sipmesh", nonce="n", '
     'uri="sip:bob@example.com", response="0011"\r\nContent-Length: 0\r\n\r\n').encode(),
    (f"OPTIONS sip:carol@example.org SIP/2.0\r\n{_HEAD}To: <sip:carol@example.org>\r\n"
     "Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 4 OPTIONS\r\nAccept: application/sdp\r\n"
     "Content-Length: 0\r\n\r\n").encode(),
    (f"MESSAGE sip:dave@example.net SIP/2.0\r\n{_HEAD}To: <sip:dave@example.net>\r\n"
     "Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 5 MESSAGE\r\nContent-Type: text/plain\r\n"
     "Content-Length: 5\r\n\r\nhello").encode(),
    (b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnone{n}\r\n"
     b"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-fz{n}\r\n"
     b"From: <sip:alice@example.com>;tag=f{n}\r\nTo: <sip:bob@example.com>;tag=b{n}\r\n"
     b"Call-ID: fz-{n}@127.0.0.1\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"),
]

INTERESTING = [b"\x00", b"\r", b"\n", b"\r\n", b";", b",", b"%", b"%00", b"\xff", b"\xc3",
               b":", b"<", b">", b'"', b" ", b"[", b"]", b"@", b"=", b"\t", b"\\", b"::",
               b";;,;,,", b"\xe4", b"?", b"&", b"0" * 12, b"-", b".", b"..", b"*"]

EVIL_VALUES = [
    b"", b" ", b"SIP/2.0/UDP 127.0.0\x00.1:5060;branch=z9hG4bKx",
    b"SIP/2.0/UDP 127.0\r.0.1;branch=z9hG4bKx", b"SIP/2.0/UDP 192.0.2.15;;,;,,",
    b"SIP/2.0/UDP [2001:db8:::192.0.2.1];branch=z9hG4bKx", b"SIP/2.0/UDP 2001:db8::10",
    b"<sip:bob@ex\xc3\xa4mple.com>", b"<sip:bob@ex\xe4mple.com>", b"<sip:bob@a..b>",
    b"<sip:bob@exa%41mple.com>", b"<sip:bob@" + b"a" * 70 + b".com>",
    b'"Joe" <sip:joe@example.org>;;;;',
    b"<sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5090;lr>", b"sip:user@2001:db8::10",
    b"<sip:user@[2001:db8:::192.0.2.1]>", b"soap.beep://192.0.2.103:3002",
    b'Digest username="\xff\xfe", realm="sipmesh", nonce="\xc3(", uri="x", response="\xff"',
    b"id-\xff\xfe-x", b"99999999999999999999 INVITE", b"4294967296", b"-1", b"300",
    b"<sip:a@b>;expires=99999999999", b"*", b"<>", b"<sip:>", b"sip:", b"tel:+1;;",
]

HEADERS = [b"Via", b"From", b"To", b"Call-ID", b"CSeq", b"Contact", b"Route", b"Max-Forwards",
           b"Content-Length", b"Proxy-Authorization", b"Authorization", b"Record-Route",
           b"Expires", b"Proxy-Require", b"v", b"t", b"f", b"i", b"m"]

# op = (kind, position in [0, 1), choice, length)
Op = tuple[int, float, int, int]
KINDS = 8


def seed_messages() -> list[bytes]:
    out = list(SEEDS)
    for folder in ("valid", "invalid"):
        for path in sorted((FIXTURES / folder).glob("*.sip")):
            out.append(path.read_bytes())
    return out


def mutate(seed: bytes, ops: list[Op], *, n: str, port: int) -> bytes:
    """`seed` with its `{n}`/`{port}` filled in, then every op applied in order."""
    data = seed.replace(b"{n}", n.encode()).replace(b"{port}", str(port).encode())
    for kind, where, choice, length in ops:
        pos = int(where * (len(data) + 1))
        if kind == 0:  # replace one byte
            data = data[:pos] + INTERESTING[choice % len(INTERESTING)] + data[pos + 1:]
        elif kind == 1:  # insert
            data = data[:pos] + INTERESTING[choice % len(INTERESTING)] + data[pos:]
        elif kind == 2:  # delete a range
            data = data[:pos] + data[pos + 1 + length % 16:]
        elif kind == 3:  # truncate
            data = data[:pos]
        elif kind == 4 or kind == 5:  # duplicate / drop a header line
            lines = data.split(b"\r\n")
            if len(lines) > 2:
                i = 1 + choice % (len(lines) - 2)
                if kind == 4:
                    lines.insert(i, lines[i])
                else:
                    del lines[i]
                data = b"\r\n".join(lines)
        elif kind == 6:  # a header value replaced by an evil one (or the header added)
            name = HEADERS[choice % len(HEADERS)]
            evil = EVIL_VALUES[length % len(EVIL_VALUES)]
            data = _set_header(data, name, evil)
        else:  # a Content-Length that lies
            data = _set_header(data, b"Content-Length", str(length * 7 - 3).encode())
    return data


def with_our_via(data: bytes, port: int, n: str) -> bytes:
    """A request with our own Via (rport) on top, so every answer comes back to the
    sending socket, never to a port a mutation or a fixture made up on this machine.  The
    message's own Vias follow and are still parsed.  Responses are left alone."""
    if data.lstrip(b"\r\n").startswith(b"SIP/"):
        return data
    cut = data.find(b"\n")  # after the first line, in the message's own line ending
    if cut < 0:
        return data
    eol = b"\r\n" if data[cut - 1:cut] == b"\r" else b"\n"
    via = f"Via: SIP/2.0/UDP 127.0.0.1:{port};branch=z9hG4bK-ours{n};rport".encode()
    return data[:cut + 1] + via + eol + data[cut + 1:]


def _set_header(data: bytes, name: bytes, value: bytes) -> bytes:
    head, sep, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    low = name.lower() + b":"
    for i, line in enumerate(lines[1:], 1):
        if line.lower().startswith(low):
            lines[i] = name + b": " + value
            return b"\r\n".join(lines) + sep + body
    lines.insert(min(2, len(lines)), name + b": " + value)
    return b"\r\n".join(lines) + sep + body


@dataclass(frozen=True)
class Verdict:
    """What `sipmesh parse` says: `ok`, or the status to answer (None: drop)."""

    ok: bool
    status: int | None
    request: bool
    method: str | None


def verdict(data: bytes) -> Verdict:
    try:
        msg = parse_message(data)
        msg.validate()
    except SipParseError as err:
        head = data.lstrip(b"\r\n")
        return Verdict(False, err.status, not head.startswith(b"SIP/"),
                       head.split(b" ", 1)[0].decode("latin-1"))
    method = msg.method if isinstance(msg, Request) else None
    return Verdict(True, None, isinstance(msg, Request), method)
