"""Stateless replies (RFC 3261 §8.2.7, OpenSIPS sl_send_reply): `ctx.reply(..., stateless=True)`
answers without a server transaction; the default routing challenges REGISTER that way.

What is observable: the answer goes out and the core holds no transaction afterwards; a
retransmission within T2 gets the very same bytes without running the route again (a fresh
challenge would carry another nonce), a later one runs the route again and gets the same
To tag; the ACK of a stateless answer to an INVITE is absorbed; a reply given after an
await goes through a transaction even when asked stateless."""

from __future__ import annotations

from typing import Any

from shared.sip import Response
from tests.unit.edge.proxyharness import Harness, to
from tests.unit.edge.test_edge_registrar_routing import (
    InProcessRegistrar,
    authenticated,
    final,
    harness,
    register,
    run,
)


class Replier:
    def __init__(self, *, awaited: bool) -> None:
        self.awaited = awaited
        self.routed: list[str] = []

    def request_route(self, request: Any, ctx: Any) -> Any:
        self.routed.append(request.method)
        if not self.awaited:
            ctx.reply(403, "Go Away", [("X-Why", "test"), ("X-Run", str(len(self.routed)))],
                      stateless=True)
            return None

        async def later() -> None:
            ctx.reply(403, "Go Away", stateless=True)

        return later()


OPTIONS = ("OPTIONS sip:carol@elsewhere.example SIP/2.0\r\n"
           "Via: SIP/2.0/UDP 127.0.0.1:5091;branch=z9hG4bKsl1;rport\r\nMax-Forwards: 70\r\n"
           "From: <sip:a@example.com>;tag=f1\r\nTo: <sip:carol@elsewhere.example>\r\n"
           "Call-ID: sl-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")


def answers(sends: list[Any]) -> list[Response]:
    return [m for m in to(sends, 5091) if isinstance(m, Response)]


async def test_a_stateless_reply_keeps_no_transaction_and_answers_a_retransmission() -> None:
    router = Replier(awaited=False)
    h = Harness(router)
    first = h.feed(OPTIONS)
    assert [(r.status, r.reason, r.get("X-Why")) for r in answers(first)] == \
        [(403, "Go Away", "test")]
    assert h.core.transactions == 0
    h.tick(1.0)
    again = h.feed(OPTIONS)  # within T2 (4 s): the same bytes, the route not run again
    assert [s.data for s in again] == [s.data for s in first]
    assert router.routed == ["OPTIONS"]
    h.tick(4.0)
    later = answers(h.feed(OPTIONS))  # past T2: answered afresh (§8.2.7)
    assert [(r.status, r.get("X-Run")) for r in later] == [(403, "2")]
    assert later[0].to_tag == answers(first)[0].to_tag is not None
    assert h.core.transactions == 0


async def test_the_ack_of_a_stateless_answer_to_an_invite_is_absorbed() -> None:
    router = Replier(awaited=False)
    h = Harness(router)
    invite = OPTIONS.replace("OPTIONS", "INVITE")
    [answer] = answers(h.feed(invite))
    ack = (invite.replace("INVITE sip:", "ACK sip:").replace("CSeq: 1 INVITE", "CSeq: 1 ACK")
           .replace("To: <sip:carol@elsewhere.example>",
                    f"To: <sip:carol@elsewhere.example>;tag={answer.to_tag}"))
    assert h.feed(ack) == []
    assert router.routed == ["INVITE"]  # the ACK was not routed anywhere


async def test_a_reply_after_an_await_goes_through_a_transaction() -> None:
    h = Harness(Replier(awaited=True))
    sent = await run(h, h.feed(OPTIONS))
    assert [r.status for r in answers(sent)] == [403]
    assert h.core.transactions == 1
    # The retransmission is absorbed by that transaction: the same 403, route not re-run.
    assert [r.status for r in answers(h.feed(OPTIONS))] == [403]
    assert not h.awaits


async def test_register_challenge_is_stateless_and_the_authenticated_one_is_not() -> None:
    reg = InProcessRegistrar()
    h = harness(reg)
    challenge = final(await run(h, h.feed(register("alice"))))
    assert challenge.status == 401 and challenge.get("WWW-Authenticate")
    assert h.core.transactions == 0
    ok = await authenticated(h, "alice", "alice-pw", contact_port=5092)
    assert ok.status == 200
    assert h.core.transactions == 1  # the 200 is kept for retransmissions (Timer J)


async def test_a_register_with_a_malformed_to_gets_400_not_a_routing_error() -> None:
    h = harness(InProcessRegistrar())
    bad = register("alice").replace("To: <sip:alice@example.com>", "To: <sip:alice@example.com")
    [answer] = answers(h.feed(bad))
    assert answer.status == 400
    assert h.core.transactions == 0


def test_recent_answers_are_held_for_t2_then_forgotten() -> None:
    from services.edge.stateless import RecentAnswers

    answers: RecentAnswers[str, bytes] = RecentAnswers(4.0)
    answers.remember("a", b"401 a", 10.0)
    answers.remember("b", b"401 b", 12.0)
    assert answers.again("a", 13.9) == b"401 a"
    assert answers.again("a", 14.0) is None  # T2 after it was sent: answered afresh
    answers.remember("c", b"401 c", 14.5)  # purges what expired, oldest first
    assert len(answers) == 2 and answers.again("b", 14.5) == b"401 b"
