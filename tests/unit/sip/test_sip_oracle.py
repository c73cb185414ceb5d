"""Cross-check against an independent parser: the PyPI `sipmessage` package (dev extra).

Every valid fixture that sipmessage can read (it refuses folding and some torture cases)
must give the same routing fields with both parsers.
"""

from __future__ import annotations

from urllib.parse import unquote

import pytest

from shared.sip import Request, parse_message
from tests.unit.sip.helpers import fixture, fixture_names

sipmessage = pytest.importorskip("sipmessage")


def _theirs(data: bytes) -> dict[str, object] | None:
    """The routing fields as sipmessage reads them, or None when it cannot."""
    try:
        msg = sipmessage.Message.parse(data)
        fields: dict[str, object] = {
            "call_id": msg.call_id,
            "cseq": (msg.cseq.sequence, msg.cseq.method),
            "from_tag": msg.from_address.parameters.get("tag"),
            "to_tag": msg.to_address.parameters.get("tag"),
            "branches": [v.parameters.get("branch") for v in msg.via],
            "transports": [v.transport for v in msg.via],
            "body": msg.body,
        }
        if isinstance(msg, sipmessage.Request) and msg.uri.scheme in ("sip", "sips"):
            fields["uri"] = (msg.uri.user, msg.uri.host)
    except Exception:
        return None
    return fields


READABLE = [n for n in fixture_names("valid") if _theirs(fixture(n)) is not None]


def test_the_reference_reads_enough_fixtures_to_matter() -> None:
    assert len(READABLE) >= 8, READABLE


@pytest.mark.parametrize("name", READABLE)
def test_same_routing_fields_as_sipmessage(name: str) -> None:
    data = fixture(name)
    ours = parse_message(data)
    theirs = _theirs(data)
    assert theirs is not None
    assert ours.call_id == theirs["call_id"]
    assert (ours.cseq.number, ours.cseq.method) == theirs["cseq"]
    assert ours.from_tag == theirs["from_tag"]
    assert ours.to_tag == theirs["to_tag"]
    # sipmessage %-decodes Via parameters; in RFC 3261 a branch is a token where "%" is an
    # ordinary character (RFC 4475 §3.1.1.2 "z9hG4bK-.!%66..."), so ours stays as sent.
    assert [unquote(v.branch or "") for v in ours.vias] == [
        unquote(str(b or ""))
        for b in theirs["branches"]  # type: ignore[attr-defined]
    ]
    assert [v.transport for v in ours.vias] == theirs["transports"]
    if "uri" in theirs and isinstance(ours, Request):
        assert (ours.parsed_uri.user, ours.parsed_uri.host) == theirs["uri"]
    body = theirs["body"]
    assert isinstance(body, bytes) and body.startswith(ours.body)
