"""Shared helpers of the SIP core tests: fixture loading and message building."""

from __future__ import annotations

from pathlib import Path

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    """Bytes of `fixtures/<name>` (e.g. `valid/wsinv.sip`)."""
    return (FIXTURES / name).read_bytes()


def fixture_names(kind: str) -> list[str]:
    """Names of every fixture in `fixtures/<kind>/`, sorted."""
    return sorted(f"{kind}/{p.name}" for p in (FIXTURES / kind).glob("*.sip"))


def crlf(text: str) -> bytes:
    """A message written with LF line ends in a test, as wire bytes with CRLF."""
    return text.strip("\n").replace("\n", "\r\n").encode("utf-8") + b"\r\n\r\n"


def invite(**overrides: str) -> bytes:
    """A small valid INVITE; `overrides` replace header lines by name (value '' drops it)."""
    headers = {
        "Via": "SIP/2.0/UDP pc33.atlanta.example.com;branch=z9hG4bK776asdhds",
        "Max-Forwards": "70",
        "To": "Bob <sip:bob@biloxi.example.com>",
        "From": "Alice <sip:alice@atlanta.example.com>;tag=1928301774",
        "Call-ID": "a84b4c76e66710@pc33.atlanta.example.com",
        "CSeq": "314159 INVITE",
        "Contact": "<sip:alice@pc33.atlanta.example.com>",
        "Content-Length": "0",
    }
    start = overrides.pop("start", "INVITE sip:bob@biloxi.example.com SIP/2.0")
    for name, value in overrides.items():
        headers[name.replace("_", "-")] = value
    lines = [start] + [f"{k}: {v}" for k, v in headers.items() if v != ""]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()
