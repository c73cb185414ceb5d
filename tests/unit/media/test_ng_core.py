"""The sans-IO ng core: framing, cookies, retransmission with the same cookie, timeout,
and OpenSIPS flag strings into ng dictionaries (fake clock, no sockets)."""

from __future__ import annotations

import bencodepy
import pytest

from services.media.flags import FlagError, SipFacts, build_command
from services.media.ng import Expired, NgDecodeError, NgProtocol, Retransmit, decode, encode

T = ("127.0.0.1", 2223)


def test_datagram_is_cookie_space_bencoded_dict() -> None:
    data = encode("12_ab_1", {"command": "ping"})
    assert data == b"12_ab_1 d7:command4:pinge"
    assert decode(b"c1 d6:result4:pong1:ai1ee") == ("c1", {"result": "pong", "a": 1})


@pytest.mark.parametrize("bad", [b"", b"nocookie", b" d1:ai1ee", b"c1 li1ee", b"c1 d1:a",
                                 b"c1 \xff\xfe"])
def test_malformed_datagrams_are_refused(bad: bytes) -> None:
    with pytest.raises(NgDecodeError):
        decode(bad)


def test_unsorted_reply_keys_decode() -> None:
    # rtpengine does not sort its dictionary keys (research §1: fastbencode refuses them)
    assert decode(b"c d6:result2:ok3:sdp1:xe")[1] == {"result": "ok", "sdp": "x"}
    assert decode(b"c d3:sdp1:x6:result2:oke")[1] == {"sdp": "x", "result": "ok"}


def test_each_request_gets_a_new_cookie_and_a_reply_matches_it() -> None:
    ng = NgProtocol("pid_r", timeout=1.0, tries=3)
    c1, d1 = ng.request(T, {"command": "ping"}, 0.0, tag="one")
    c2, _ = ng.request(T, {"command": "ping"}, 0.0, tag="two")
    assert c1 != c2 and d1.startswith(c1.encode() + b" ")
    got = ng.receive(encode(c2, {"result": "pong"}))
    assert got is not None and got.tag == "two" and got.message == {"result": "pong"}
    assert ng.receive(encode(c2, {"result": "pong"})) is None  # late duplicate: dropped
    assert ng.receive(b"junk") is None
    assert ng.stats.dropped == 2 and len(ng) == 1


def test_retransmission_reuses_the_cookie_then_expires() -> None:
    ng = NgProtocol("p", timeout=1.0, tries=3)
    cookie, first = ng.request(T, {"command": "offer"}, 10.0, tag="t")
    assert ng.next_deadline() == 11.0
    assert ng.due(10.99) == []
    assert ng.due(11.0) == [Retransmit(T, first)]  # same bytes, same cookie
    assert ng.next_deadline() == 12.0
    assert ng.due(12.0) == [Retransmit(T, first)]
    assert ng.due(13.0) == [Expired(cookie, T, "t")]  # three transmissions, no reply
    assert ng.next_deadline() is None and len(ng) == 0
    assert ng.stats.retransmissions == 2 and ng.stats.timeouts == 1


def test_a_reply_to_a_retransmission_stops_the_schedule() -> None:
    ng = NgProtocol("p", timeout=0.5, tries=5)
    cookie, _ = ng.request(T, {}, 0.0)
    ng.due(0.5)
    assert ng.receive(encode(cookie, {"result": "ok"})) is not None
    assert ng.due(100.0) == [] and ng.next_deadline() is None


def test_fail_target_fails_only_that_instance() -> None:
    ng = NgProtocol("p")
    c1, _ = ng.request(T, {}, 0.0, tag=1)
    ng.request(("127.0.0.1", 9), {}, 0.0, tag=2)
    assert ng.fail_target(T) == [Expired(c1, T, 1)]
    assert len(ng) == 1


FACTS = SipFacts("call1", "ftag", "", received_from="192.0.2.7", via_branches=("z9hG4bKa",))


def test_opensips_flags_become_the_ng_dictionary() -> None:
    d = build_command("offer", FACTS, "replace-origin replace-session-connection ICE=remove "
                      "RTP/AVP trust-address label=caller in-iface=int out-iface=ext "
                      "rtcp-mux-demux delete-delay=5 repacketize=20 via-branch=1", sdp="v=0")
    assert d == {
        "ICE": "remove", "label": "caller", "delete-delay": 5, "repacketize": 20,
        "sdp": "v=0", "direction": ["int", "ext"], "flags": ["trust-address"],
        "replace": ["origin", "session-connection"], "transport-protocol": "RTP/AVP",
        "rtcp-mux": ["demux"], "call-id": "call1", "via-branch": "z9hG4bKa",
        "received-from": ["IP4", "192.0.2.7"], "from-tag": "ftag", "command": "offer"}
    # the ng dictionary bencodes (rtpengine reads it)
    assert bencodepy.encode(d)


def test_transport_letters_combine_as_opensips() -> None:
    assert build_command("offer", FACTS, "SRTP AVPF", sdp="")["transport-protocol"] == \
        "RTP/SAVPF"
    assert build_command("offer", FACTS, "UDP/TLS/RTP/SAVPF", sdp="")[
        "transport-protocol"] == "UDP/TLS/RTP/SAVPF"


@pytest.mark.parametrize("flags", ["ICE", "ICE=maybe", "via-branch=7", "in-iface=x",
                                   "delete-delay=0", "address-family=IPX", "repacketize=x",
                                   "media-address"])
def test_bad_flags_are_refused_with_a_reason(flags: str) -> None:
    with pytest.raises(FlagError):
        build_command("offer", FACTS, flags, sdp="")


def test_tags_follow_opensips_24() -> None:
    both = SipFacts("c", "F", "T")
    # a request's offer, a reply's answer, a delete: the message's own tags
    assert build_command("offer", both, sdp="")["from-tag"] == "F"
    answer = build_command("answer", SipFacts("c", "F", "T", reply=True), sdp="")
    assert (answer["from-tag"], answer["to-tag"]) == ("F", "T")
    delete = build_command("delete", both)
    assert delete["from-tag"] == "F" and "to-tag" not in delete  # to-tag only on request
    assert build_command("delete", both, "to-tag")["to-tag"] == "T"
    # the answer in an ACK and the offer in a 200 are the To side's SDP: swapped
    ack = build_command("answer", both, sdp="")
    assert (ack["from-tag"], ack["to-tag"]) == ("T", "F")
    late = build_command("offer", SipFacts("c", "F", "T", reply=True), sdp="")
    assert (late["from-tag"], late["to-tag"]) == ("T", "F")
    assert build_command("offer", both, "force-answer", sdp="")["command"] == "answer"
    with pytest.raises(FlagError):
        build_command("answer", SipFacts("c", "F", ""), sdp="")  # ACK without To tag
    with pytest.raises(FlagError):
        build_command("offer", SipFacts("c", ""), sdp="")
