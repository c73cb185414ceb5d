"""The Session message the edge's registrar client builds for a batch of calls (issue 22,
docs/perf.md "Seventh round"): a REGISTER queues only its Save's fields and the writer
fills them into the stream message in place.  What goes on the wire must be what the
generated classes of contracts/proto build from the same fields, byte for byte, so a
registrar of any version reads it as before; the reader hands a Save's answer back as
the tuple the routing uses."""

from __future__ import annotations

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from services.edge.registrar_client import _message, _retried, _Save, _save_result
from shared.sip import DigestCredentials

REGISTER = (b"REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1"
            b"\r\nCSeq: 2 REGISTER\r\nContent-Length: 0\r\n\r\n")
CREDS = DigestCredentials(username="alice", realm="example.com", nonce="n0nce.mac",
                          uri="sip:example.com", response="0" * 32, qop="auth",
                          nc="00000001", cnonce="c0ffee")


def generated(rid: int, kind: str, *, digest: bool, retry: bool = False) -> pb.SessionRequest:
    request = pb.SaveRequest(message=REGISTER, source_host="10.0.0.5", source_port=5062,
                             transport="udp", socket="udp:127.0.0.1:5060", retry=retry)
    if digest:
        request.digest.CopyFrom(pb.Digest(
            username="alice", realm="example.com", nonce="n0nce.mac", uri="sip:example.com",
            response="0" * 32, algorithm="MD5", qop="auth", nc="00000001", cnonce="c0ffee"))
    return pb.SessionRequest(id=rid, **{kind: request})


def queued(creds: DigestCredentials | None = None) -> _Save:
    return _Save(REGISTER, "10.0.0.5", 5062, "udp", "udp:127.0.0.1:5060", creds)


def test_a_batch_of_saves_is_the_generated_message_byte_for_byte() -> None:
    lookup = pb.LookupRequest(aor="bob@example.com", method="INVITE")
    built = _message([(1, "save_with_digest", queued(CREDS)), (2, "save", queued()),
                      (3, "lookup", lookup), (4, "save_with_digest", _retried(queued(CREDS)))])
    expected = pb.SessionRequests(calls=[
        generated(1, "save_with_digest", digest=True), generated(2, "save", digest=False),
        pb.SessionRequest(id=3, lookup=lookup),
        generated(4, "save_with_digest", digest=True, retry=True)])
    assert built.SerializeToString() == expected.SerializeToString()
    assert [c.WhichOneof("call") for c in built.calls] == [
        "save_with_digest", "save", "lookup", "save_with_digest"]


def test_credentials_without_qop_leave_those_fields_unset() -> None:
    rfc2069 = DigestCredentials(username="alice", realm="example.com", nonce="n",
                                uri="sip:example.com", response="1" * 32)
    expected = pb.SaveRequest(
        message=REGISTER, source_host="10.0.0.5", source_port=5062, transport="udp",
        socket="udp:127.0.0.1:5060", digest=pb.Digest(
            username="alice", realm="example.com", nonce="n", uri="sip:example.com",
            response="1" * 32, algorithm="MD5"))
    assert queued(rfc2069).request().SerializeToString() == expected.SerializeToString()


def test_a_save_reply_becomes_the_tuple_the_routing_uses() -> None:
    reply = pb.SaveReply(status=200, reason="OK", headers=[
        pb.Header(name="Contact", value="<sip:alice@10.0.0.5:5062>;expires=120")])
    assert _save_result(reply) == (200, "OK", [
        ("Contact", "<sip:alice@10.0.0.5:5062>;expires=120")], False)
    assert _save_result(pb.SaveReply(digest_rejected=True)) == (0, "", [], True)
