"""The sans-IO SIPREC core: labelled SDP and the multipart offer (RFC 7866 §7, §8.1.1,
RFC 9806), the metadata document (RFC 7865), and the recording sessions' table (the
INVITE's headers, the SRS's answer, failover, the BYE); the fake SRS's RFC checks run
over what the table builds, so the client and the SRS stand-in agree on the RFC."""

from __future__ import annotations

import pytest

from services.siprec.body import (
    BodyError,
    label_sdp,
    multipart,
    parse_multipart,
    sdp_directions,
    sdp_labels,
    split_offer,
)
from services.siprec.metadata import (
    MetadataError,
    Participant,
    Snapshot,
    build_metadata,
    parse_metadata,
    two_party,
)
from services.siprec.session import (
    Outgoing,
    Recording,
    RecordingError,
    State,
    Table,
    hold_rule,
    parse_srs_list,
)
from services.siprec.testing.fake_srs import check_invite
from shared.sip import Request

FORK = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=rtpengine\r\nt=0 0\r\n"
        "m=audio 30000 RTP/AVP 8\r\nc=IN IP4 127.0.0.1\r\na=rtpmap:8 PCMA/8000\r\n"
        "a=sendonly\r\na=rtcp:30001\r\n"
        "m=audio 30010 RTP/AVP 8\r\nc=IN IP4 127.0.0.1\r\na=sendrecv\r\n")


def test_labels_go_into_each_media_section_which_becomes_sendonly() -> None:
    out = label_sdp(FORK, ["1", "2"])
    assert sdp_labels(out) == ["1", "2"]
    sections = out.split("m=")[1:]
    assert all(s.count("a=sendonly") == 1 and "sendrecv" not in s for s in sections)
    assert "a=rtcp:30001" in out and out.endswith("\r\n")
    assert sdp_labels(label_sdp(out, ["a", "b"])) == ["a", "b"]  # replaced, not added


def test_labels_must_match_the_media_sections_and_be_tokens() -> None:
    with pytest.raises(BodyError):
        label_sdp(FORK, ["1"])
    with pytest.raises(BodyError):
        label_sdp(FORK, ["1", "two words"])


def test_multipart_offer_round_trips_and_accepts_the_rfc_7866_type() -> None:
    ctype, body = multipart(FORK, "<x/>", "b1")
    assert ctype == "multipart/mixed;boundary=b1"
    assert b"Content-Type: application/rs-metadata+xml\r\n" in body
    assert b"Content-Disposition: recording-session\r\n" in body
    assert split_offer(ctype, body) == (FORK, "<x/>")
    old = body.replace(b"rs-metadata+xml", b"rs-metadata")  # RFC 7866's name (RFC 9806)
    assert split_offer(ctype, old)[1] == "<x/>"
    nodisp = body.replace(b"Content-Disposition: recording-session\r\n", b"")
    with pytest.raises(BodyError):
        split_offer(ctype, nodisp)
    with pytest.raises(BodyError):
        parse_multipart("application/sdp", body)
    with pytest.raises(BodyError):
        multipart(FORK, "<x/>", "bad boundary")


def _snapshot(**kw: object) -> Snapshot:
    caller, callee = two_party(Participant("sip:alice@a.example", 'Alice "A" & co'),
                               Participant("sip:bob@b.example?x=1&y=2"), ["1", "2"])
    base: dict[str, object] = {"call_id": "c1", "from_tag": "t1", "group": "sales",
                               "participants": (caller, callee), "labels": ("1", "2"),
                               "started": 1_800_000_000.0}
    base.update(kw)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_metadata_names_parties_streams_and_their_associations() -> None:
    doc = build_metadata(_snapshot())
    parsed = parse_metadata(doc)
    assert parsed.datamode == "complete"
    assert len(parsed.group_ids) == 1 and len(parsed.session_ids) == 1
    assert parsed.associated_sessions == parsed.session_ids
    alice = parsed.participant("sip:alice@a.example")
    bob = parsed.participant("sip:bob@b.example?x=1&y=2")  # escaped and read back
    assert alice.name == 'Alice "A" & co' and bob.name == ""
    assert (alice.send, alice.recv, bob.send, bob.recv) == (["1"], ["2"], ["2"], ["1"])
    assert sorted(parsed.labels.values()) == ["1", "2"]
    assert "<associate-time>2027-01-15T08:00:00Z</associate-time>" in doc


def test_metadata_ids_are_stable_per_call_and_differ_between_calls() -> None:
    assert build_metadata(_snapshot()) == build_metadata(_snapshot())
    one, other = parse_metadata(build_metadata(_snapshot())), parse_metadata(
        build_metadata(_snapshot(call_id="c2")))
    assert one.session_ids != other.session_ids
    assert set(one.labels) != set(other.labels)


@pytest.mark.parametrize("broken", [
    "<recording/>",  # wrong namespace
    "not xml",
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>x</datamode>'
    "</recording>",
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
    '<stream stream_id="s" session_id="nope"><label>1</label></stream></recording>',
    '<recording xmlns="urn:ietf:params:xml:ns:recording:1"><datamode>complete</datamode>'
    '<participant participant_id="p"><nameID aor="sip:a@b"/></participant>'
    '<participantstreamassoc participant_id="p"><send>ghost</send>'
    "</participantstreamassoc></recording>",
])
def test_metadata_reader_rejects_what_rfc_7865_does_not_allow(broken: str) -> None:
    with pytest.raises(MetadataError):
        parse_metadata(broken)


def _recording(**kw: object) -> Recording:
    base: dict[str, object] = {
        "call_id": "call-1", "from_tag": "ft", "srs": ("sip:srs1@h:5090", "sip:srs2@h:5091"),
        "caller": Participant("sip:alice@a"), "callee": Participant("sip:bob@b"),
        "instance": "udp:127.0.0.1:2223", "started": 1_800_000_000.0,
    }
    base.update(kw)
    return Recording(**base)  # type: ignore[arg-type]


def _invite(table: Table, rec: Recording, from_tags: list[str]) -> Request:
    table.subscribed(rec, FORK, "sub-tag", from_tags)
    out = table.invite(rec, rs_call_id="rs-1", local_tag="lt",
                       contact="sip:src@127.0.0.1:5060", boundary="bnd")
    return Request(out.method, out.ruri, [("Via", "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKx"),
                                          *out.headers], out.body)


def test_the_invite_is_what_an_srs_checks_for() -> None:
    table = Table()
    rec = table.begin(_recording())
    req = _invite(table, rec, ["ft", "tt"])
    assert req.uri == "sip:srs1@h:5090" and rec.state is State.INVITING
    assert req.get("Require") == "siprec"
    assert req.get("Contact") == "<sip:src@127.0.0.1:5060>;+sip.src"
    problems, meta, labels, _ = check_invite(req)
    assert problems == [] and labels == ["1", "2"] and meta is not None
    assert meta.participant("sip:alice@a").send == ["1"]


def test_labels_follow_rtpengine_s_leg_order() -> None:
    """rtpengine lists the legs (`from-tags`) in its own order: label 1 is always what
    the caller sends."""
    table = Table()
    rec = table.begin(_recording())
    req = _invite(table, rec, ["tt", "ft"])  # the callee's leg first
    sdp, _ = split_offer(req.content_type or "", req.body)
    assert sdp_labels(sdp) == ["2", "1"]
    assert check_invite(req)[0] == []


def test_a_call_without_rtpengine_or_twice_is_refused() -> None:
    table = Table()
    with pytest.raises(RecordingError, match="not anchored"):
        table.begin(_recording(instance=""))
    table.begin(_recording())
    with pytest.raises(RecordingError, match="already"):
        table.begin(_recording())
    with pytest.raises(RecordingError):
        table.subscribed(_recording(), FORK.split("m=audio 30010")[0], "t", ["ft"])


ANSWER = b"v=0\r\no=s 1 1 IN IP4 h\r\ns=-\r\nc=IN IP4 h\r\nt=0 0\r\nm=audio 4000 RTP/AVP 8\r\n"


def test_a_2xx_makes_the_dialog_and_the_bye_follows_it() -> None:
    table = Table()
    rec = table.begin(_recording())
    _invite(table, rec, ["ft", "tt"])
    sdp = table.answered(rec, 200, [
        ("To", "<sip:srs1@h:5090>;tag=srs-tag"), ("Contact", "<sip:srs@10.0.0.9:5090>"),
        ("Record-Route", "<sip:p1;lr>, <sip:p2;lr>"), ("Content-Type", "application/sdp"),
    ], ANSWER, 1_800_000_005.0)
    assert sdp is not None and "m=audio 4000" in sdp and rec.state is State.ACTIVE
    assert rec.route_set == ("<sip:p2;lr>", "<sip:p1;lr>")  # §12.1.2: reversed
    bye = table.stop(rec)
    assert bye is not None and bye.method == "BYE" and bye.ruri == "sip:srs@10.0.0.9:5090"
    headers = dict(bye.headers)
    assert headers["CSeq"] == "2 BYE" and headers["Call-ID"] == "rs-1"
    assert headers["To"].endswith(";tag=srs-tag") and headers["From"].endswith(";tag=lt")
    assert bye.route == rec.route_set
    table.end(rec)
    assert table.get("call-1") is None and rec.state is State.ENDED


def test_refusals_fail_over_along_the_list_until_it_ends() -> None:
    table = Table()
    rec = table.begin(_recording())
    _invite(table, rec, ["ft", "tt"])
    assert table.answered(rec, 503, [], b"", 0.0) is None
    assert rec.state is State.INVITING and rec.srs_uri == "sip:srs2@h:5091"
    assert table.answered(rec, 408, [], b"", 0.0) is None
    assert rec.state is State.FAILED
    assert rec.tried == [("sip:srs1@h:5090", 503), ("sip:srs2@h:5091", 408)]
    assert table.stop(rec) is None  # nothing to BYE


def test_skip_failover_codes_and_a_broken_2xx() -> None:
    table = Table()
    rec = table.begin(_recording())
    _invite(table, rec, ["ft", "tt"])
    assert table.answered(rec, 486, [], b"", 0.0) is None
    assert rec.state is State.FAILED  # OpenSIPS skip_failover_codes: not the next SRS
    other = table.begin(_recording(call_id="call-2"))
    _invite(table, other, ["ft", "tt"])
    assert table.answered(other, 200, [("To", "<sip:x@h>")], b"", 0.0) is None  # no tag
    assert other.state is State.INVITING and other.srs_index == 1


def test_srs_lists_are_opensips_comma_lists_of_sip_uris() -> None:
    assert parse_srs_list("sip:a@h, sip:b@h:5091") == ("sip:a@h", "sip:b@h:5091")
    assert parse_srs_list(["sip:a@h"]) == ("sip:a@h",)
    for bad in ("", "http://x", "sip:a@h\r\nX: y", " , "):
        with pytest.raises(RecordingError):
            parse_srs_list(bad)


# -- following the call (RFC 7866 §8.1.2, §8.3; RFC 7865 §6.1.1; RFC 3264 §8.4) ------------
def _active(table: Table) -> Recording:
    rec = table.begin(_recording())
    _invite(table, rec, ["ft", "tt"])
    table.answered(rec, 200, [("To", "<sip:srs1@h:5090>;tag=srs-tag"),
                              ("Contact", "<sip:srs@10.0.0.9:5090>"),
                              ("Record-Route", "<sip:p1;lr>")], ANSWER, 1_800_000_005.0)
    assert rec.state is State.ACTIVE
    return rec


def _as_request(out: Outgoing) -> Request:
    return Request(out.method, out.ruri, [("Via", "SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKy"),
                                          *out.headers], out.body)


@pytest.mark.parametrize(("offerer", "direction", "held"), [
    ("ft", "sendonly", ("2",)),   # the caller holds: the callee's stream stops
    ("tt", "sendonly", ("1",)),   # the callee holds: the caller's stream stops
    ("ft", "a=recvonly", ("1",)),
    ("tt", "inactive", ("1", "2")),
    ("ft", "sendrecv", ()),
])
def test_hold_rule_maps_the_offer_direction_to_the_held_streams(
        offerer: str, direction: str, held: tuple[str, ...]) -> None:
    rec = _active(Table())
    assert hold_rule(rec, offerer, direction) == held


def test_hold_sends_the_srs_a_reinvite_with_new_metadata_and_inactive_stream() -> None:
    table = Table()
    rec = _active(table)
    out = table.update(rec, offerer_tag="ft", direction="sendonly", now=10.0,
                       boundary="b2")
    assert out is not None and out.method == "INVITE"
    assert out.ruri == "sip:srs@10.0.0.9:5090" and out.route == ("<sip:p1;lr>",)
    headers = dict(out.headers)
    assert headers["CSeq"] == "2 INVITE" and headers["Call-ID"] == "rs-1"
    assert headers["To"].endswith(";tag=srs-tag") and headers["From"].endswith(";tag=lt")
    req = _as_request(out)
    problems, meta, labels, sdp = check_invite(req, update=True)
    assert problems == [] and labels == ["1", "2"] and meta is not None
    assert meta.datamode == "complete"
    assert sdp_directions(sdp) == {"1": "sendonly", "2": "inactive"}
    assert "o=- 1 2 IN IP4" in sdp  # RFC 3264 §8: the version grows
    assert meta.participant("sip:alice@a").send == ["1"]
    assert meta.participant("sip:alice@a").recv == []  # bob's stream is on hold
    assert meta.participant("sip:bob@b").send == []
    assert check_invite(req)[0] != []  # not an initial INVITE (no Require, inactive)
    # RFC 3261 §14.1: one INVITE at a time; the resume waits for the answer
    assert table.update(rec, offerer_tag="ft", direction="sendrecv", now=11.0,
                        boundary="b3") is None
    assert table.update_answered(rec, 200, 12.0) == "updated"
    assert rec.held == ("2",)
    resume = table.due(rec, 12.0, boundary="b4")
    assert resume is not None and dict(resume.headers)["CSeq"] == "3 INVITE"
    assert sdp_directions(split_offer(dict(resume.headers)["Content-Type"],
                                      resume.body)[0]) == {"1": "sendonly", "2": "sendonly"}
    assert table.update_answered(rec, 200, 12.5) == "updated" and rec.held == ()
    assert table.due(rec, 13.0, boundary="b5") is None  # nothing left to say
    bye = table.stop(rec)
    assert bye is not None and dict(bye.headers)["CSeq"] == "4 BYE"  # after the updates


def test_an_unchanged_hold_state_sends_nothing() -> None:
    table = Table()
    rec = _active(table)
    assert table.update(rec, offerer_tag="ft", direction="sendrecv", now=1.0,
                        boundary="b") is None
    assert table.update(rec, offerer_tag="ft", direction="bogus", now=1.0,
                        boundary="b") is None
    assert rec.cseq == 1


def test_a_491_is_retried_after_its_wait_on_the_clock() -> None:
    table = Table()
    rec = _active(table)
    assert table.update(rec, offerer_tag="tt", direction="inactive", now=100.0,
                        boundary="b") is not None
    assert table.update_answered(rec, 491, 100.0, jitter=0.0) == "retry"
    assert rec.retry_at == pytest.approx(102.1)  # RFC 3261 §14.1: 2.1-4 s for the owner
    assert table.due(rec, 102.0, boundary="b") is None
    again = table.due(rec, 102.1, boundary="b")
    assert again is not None and dict(again.headers)["CSeq"] == "3 INVITE"
    assert table.update_answered(rec, 491, 103.0, jitter=1.0) == "retry"
    assert rec.retry_at == pytest.approx(107.0)


def test_a_refused_update_keeps_the_session_and_481_ends_it() -> None:
    table = Table()
    rec = _active(table)
    table.update(rec, offerer_tag="ft", direction="sendonly", now=1.0, boundary="b")
    assert table.update_answered(rec, 488, 1.0) == "refused"
    assert rec.held == () and table.due(rec, 2.0, boundary="b") is None
    assert rec.state is State.ACTIVE
    table.update(rec, offerer_tag="ft", direction="inactive", now=3.0, boundary="b")
    assert table.update_answered(rec, 481, 3.0) == "gone"


def test_an_srs_bye_ends_the_session_without_a_bye_of_ours() -> None:
    table = Table()
    rec = _active(table)
    assert table.by_rs_call_id("rs-1") is rec and table.by_rs_call_id("rs-2") is None
    assert table.srs_ended(rec) and rec.state is State.STOPPING
    assert table.stop(rec) is None  # nothing to BYE any more
    table.end(rec)
    assert table.get("call-1") is None


def test_the_hold_state_and_offer_survive_the_store() -> None:
    table = Table()
    rec = _active(table)
    table.update(rec, offerer_tag="ft", direction="sendonly", now=1.0, boundary="b")
    table.update_answered(rec, 200, 1.0)
    back = Recording.from_doc(rec.to_doc())
    assert back.held == ("2",) and back.offers == 1 and back.cseq == 2
    assert back.offer_sdp == rec.offer_sdp
    old = rec.to_doc()
    for key in ("held", "offers", "offer_sdp"):
        old.pop(key)
    assert Recording.from_doc(old).held == ()  # a row written before this release
