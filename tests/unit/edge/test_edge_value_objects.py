"""The small objects built per message keep their value semantics with written-out
constructors (docs/perf.md, third round): equal by value, hashable, fresh defaults."""

from __future__ import annotations

import dataclasses

from services.edge.addresses import Destination, Interface, Source
from services.edge.core import Send
from shared.sip import parse_uri
from shared.sip.nameaddr import NameAddr
from shared.sip.uri import Uri
from shared.sip.via import Via
from shared.transaction.events import Transmit

ITF = Interface("udp", "127.0.0.1", 5060)


def test_source_destination_send_compare_and_hash_by_value() -> None:
    assert Source(ITF, "10.0.0.1", 5060) == Source(ITF, "10.0.0.1", 5060)
    assert Source(ITF, "10.0.0.1", 5060) != Source(ITF, "10.0.0.1", 5061)
    assert len({Source(ITF, "10.0.0.1", 5060), Source(ITF, "10.0.0.1", 5060)}) == 1
    # `conn` is not part of a Destination's identity (compare=False), as before.
    assert Destination("udp", "h", 1, ITF, conn=1) == Destination("udp", "h", 1, ITF, conn=2)
    assert hash(Destination("udp", "h", 1, conn=1)) == hash(Destination("udp", "h", 1))
    dest = Destination("udp", "h", 1)
    assert Send(b"x", dest, True) == Send(b"x", dest, True, txn=None)
    assert Send(b"x", dest) != Send(b"y", dest)
    assert dataclasses.replace(Source(ITF, "h", 1), port=2) == Source(ITF, "h", 2)


def test_uri_via_nameaddr_defaults_are_fresh_and_replace_works() -> None:
    a, b = Uri("sip"), Uri("sip")
    a.params["lr"] = None
    assert b.params == {} and b.headers == {} and b.host == "" and b.port is None
    assert Via("UDP", "h").params == {} and Via("UDP", "h").protocol == "SIP/2.0"
    assert NameAddr(Uri("sip", host="h")).params == {}
    uri = parse_uri("sip:bob@example.com;transport=tcp")
    copy = dataclasses.replace(uri, port=5070)
    assert (copy.user, copy.host, copy.port, copy.params) == ("bob", "example.com", 5070,
                                                              {"transport": "tcp"})


def test_events_carry_their_fields() -> None:
    sent = Transmit(b"data", ("h", 1))
    assert (sent.data, sent.destination, sent.retransmission, sent.transaction) == (
        b"data", ("h", 1), False, None)
    assert "Transmit(data=b'data'" in repr(sent)
