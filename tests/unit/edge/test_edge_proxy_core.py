"""The sans-IO proxy core (RFC 3261 §16) driven in memory on a fake clock."""

from __future__ import annotations

from typing import Any

from services.edge.routing import RouteContext
from shared.sip import Request, Response
from shared.transaction.transaction import RequestSummary
from tests.unit.edge.proxyharness import TCP, UAC, Harness, answer, invite, to, unsigned


def forwarded(h: Harness, sends: list[Any], port: int = 5090) -> Request:
    reqs = [m for m in to(sends, port) if isinstance(m, Request)]
    assert reqs, f"nothing forwarded to {port}: {[s.data[:40] for s in sends]}"
    return reqs[0]


def statuses(sends: list[Any], port: int = UAC[1]) -> list[int]:
    return [m.status for m in to(sends, port) if isinstance(m, Response)]


def test_invite_is_forwarded_with_via_rr_and_max_forwards() -> None:
    h = Harness()
    sends = h.feed(invite())
    assert statuses(sends) == [100]
    fwd = forwarded(h, sends)
    assert fwd.max_forwards == 69
    assert fwd.vias[0].host == "127.0.0.1" and fwd.vias[0].port == 5060
    assert (fwd.vias[0].branch or "").startswith("z9hG4bK")
    # RFC 3581: the caller asked for rport; received and rport are filled in.
    assert fwd.vias[1].params["rport"] == "5091"
    [rr] = fwd.get_all("Record-Route")
    assert unsigned([rr]) == ["<sip:127.0.0.1:5060;lr>"]
    # Signed for this dialog and the caller's Contact (services/edge/rr_signing.py).
    sg = fwd.record_routes[0].uri.params["sg"]
    assert sg is not None
    assert h.core.rr_signer.verify(sg, "c1", ("a1",), "127.0.0.1:5091")
    assert not h.core.rr_signer.verify(sg, "c2", ("a1",), "127.0.0.1:5091")
    assert not h.core.rr_signer.verify(sg, "c1", ("a1",), "127.0.0.1:5090")


def test_responses_are_relayed_and_our_via_removed() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    sends = h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    relayed = to(sends, 5091)
    assert [r.status if isinstance(r, Response) else r for r in relayed] == [180]
    assert len(relayed[0].vias) == 1 and relayed[0].top_via.branch == "z9hG4bKuac1"
    sends = h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))
    assert statuses(sends) == [200]
    # A 2xx retransmission after the transaction ended is forwarded statelessly.
    sends = h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))
    assert statuses(sends) == [200]


def test_max_forwards_zero_gives_483_but_options_is_answered() -> None:
    h = Harness()
    assert statuses(h.feed(invite(mf=0))) == [483]
    sends = h.feed(invite(method="OPTIONS", mf=0, branch="z9hG4bKopt"))
    [resp] = to(sends, 5091)
    assert isinstance(resp, Response) and resp.status == 200
    assert "INVITE" in (resp.get("Allow") or "")


def test_options_to_the_proxy_itself_is_answered() -> None:
    h = Harness()
    assert statuses(h.feed(invite("sip:127.0.0.1:5060", method="OPTIONS"))) == [200]


def test_unsupported_uri_scheme_gives_416() -> None:
    h = Harness()
    assert statuses(h.feed(invite("tel:+15551234"))) == [416]
    assert h.feed(invite("tel:+15551234", method="ACK", branch="z9hG4bKa")) == []


def test_proxy_require_gives_420_with_unsupported() -> None:
    h = Harness()
    sends = h.feed(invite(extra="Proxy-Require: foo, bar\r\n"))
    [resp] = to(sends, 5091)
    assert isinstance(resp, Response) and resp.status == 420
    assert resp.get_all("Unsupported") == ["foo", "bar"]


def test_loop_back_to_ourselves_is_detected_482() -> None:
    class ToItself:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            ctx.forward()  # a routing script that sends the request to the proxy again

    h = Harness(ToItself())
    sends = h.feed(invite("sip:bob@127.0.0.1:5060"))  # the next hop is this very proxy
    looped = forwarded(h, sends, port=5060)
    sends = h.feed(looped.serialize(), peer=("127.0.0.1", 5060))
    assert [m.status for m in to(sends, 5060) if isinstance(m, Response)][-1] == 482


def test_spiral_with_changed_request_uri_is_not_a_loop() -> None:
    class Spiral:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            if request.parsed_uri.host == "example.com":
                ctx.forward("sip:bob@127.0.0.1:5090")
            else:  # rewrite and send through this proxy once more (a spiral, §16.3 step 4)
                ctx.forward("sip:bob@example.com", next_hop="sip:127.0.0.1:5060")

    h = Harness(Spiral())
    again = forwarded(h, h.feed(invite("sip:bob@127.0.0.1:5060")), port=5060)
    assert again.uri == "sip:bob@example.com"
    sends = h.feed(again.serialize(), peer=("127.0.0.1", 5060))
    assert forwarded(h, sends, port=5090).uri == "sip:bob@127.0.0.1:5090"


def test_untrusted_source_for_foreign_domain_is_refused() -> None:
    h = Harness(trusted=())
    assert statuses(h.feed(invite("sip:bob@elsewhere.example"))) == [100, 403]


def test_local_domain_static_route_and_404() -> None:
    h = Harness(trusted=(), local_domains=("example.com",),
                static_routes={"bob@example.com": "sip:bob@127.0.0.1:5090"})
    fwd = forwarded(h, h.feed(invite("sip:bob@example.com")))
    assert fwd.uri == "sip:bob@127.0.0.1:5090"
    assert statuses(h.feed(invite("sip:carol@example.com", branch="z9hG4bK2",
                                  call_id="c2"))) == [100, 404]


def test_request_for_the_proxy_itself_uses_static_routes_not_a_loop() -> None:
    h = Harness(static_routes={"bob": "sip:bob@127.0.0.1:5090"})
    fwd = forwarded(h, h.feed(invite("sip:bob@127.0.0.1:5060")))
    assert fwd.uri == "sip:bob@127.0.0.1:5090"
    sends = h.feed(invite("sip:127.0.0.1:5060", method="REGISTER", branch="z9hG4bKr"))
    assert statuses(sends) == [404]


def test_no_routing_decision_gives_503() -> None:
    class Silent:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            return None

    h = Harness(Silent())
    assert statuses(h.feed(invite())) == [100, 503]


def test_loose_routing_pops_our_route_and_follows_the_next() -> None:
    h = Harness()
    bye = invite("sip:bob@127.0.0.1:5090", method="BYE", to_tag="b1", branch="z9hG4bKbye",
                 extra="Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5070;lr>\r\n")
    sends = h.feed(bye)
    fwd = forwarded(h, sends, port=5070)
    assert fwd.uri == "sip:bob@127.0.0.1:5090"
    assert fwd.get_all("Route") == ["<sip:127.0.0.1:5070;lr>"]


def test_strict_router_next_hop_gets_request_uri_in_route() -> None:
    h = Harness()
    bye = invite("sip:bob@127.0.0.1:5090", method="BYE", to_tag="b1", branch="z9hG4bKbye",
                 extra="Route: <sip:127.0.0.1:5060;lr>, <sip:127.0.0.1:5070>\r\n")
    fwd = forwarded(h, h.feed(bye), port=5070)
    # §16.6 step 6: strict router: its URI becomes the Request-URI, ours goes last.
    assert fwd.uri == "sip:127.0.0.1:5070"
    assert fwd.get_all("Route")[-1] == "<sip:bob@127.0.0.1:5090>"


def test_request_uri_from_a_strict_router_upstream_is_restored() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    our_rr = fwd.record_routes[0].uri
    # §16.4: a strict router upstream puts our Record-Route URI (signature included) in
    # the Request-URI; the real target is the last Route.
    bye = invite(str(our_rr), method="BYE", to_tag="b1", branch="z9hG4bKs",
                 extra="Route: <sip:bob@127.0.0.1:5090>\r\n", port=5091)
    fwd = forwarded(h, h.feed(bye), port=5090)
    assert fwd.uri == "sip:bob@127.0.0.1:5090"
    assert not fwd.has("Route")


def test_our_address_in_the_request_uri_without_our_signature_is_not_strict_routing() -> None:
    # A phone whose outbound proxy is this edge: `INVITE sip:bob@<edge>` with our address in
    # a Route. Only a Request-URI we record-routed means a strict router (§16.4): the user
    # part stays and the request is routed by it (here: a static route for bob).
    h = Harness(static_routes={"bob": "sip:bob@127.0.0.1:5090"})
    sends = h.feed(invite("sip:bob@127.0.0.1", extra="Route: <sip:127.0.0.1:5060;lr>\r\n"))
    fwd = forwarded(h, sends, port=5090)
    assert fwd.uri == "sip:bob@127.0.0.1:5090"
    assert not fwd.has("Route")
    assert 404 not in statuses(sends)


def test_double_record_route_when_transport_changes() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite("sip:bob@127.0.0.1:5090;transport=tcp")))
    assert fwd.top_via.transport == "TCP"
    assert unsigned(fwd.get_all("Record-Route")) == [
        "<sip:127.0.0.1:5060;transport=tcp;lr>", "<sip:127.0.0.1:5060;lr>"]
    # Both come back as Route in-dialog and both are removed (§16.4).
    bye = invite("sip:bob@127.0.0.1:5090;transport=tcp", method="BYE", to_tag="b1",
                 branch="z9hG4bKb2", extra="Route: <sip:127.0.0.1:5060;lr>, "
                 "<sip:127.0.0.1:5060;transport=tcp;lr>\r\n")
    fwd = forwarded(h, h.feed(bye))
    assert not fwd.has("Route") and fwd.top_via.transport == "TCP"


def test_tcp_responses_go_back_on_the_same_connection() -> None:
    h = Harness()
    sends = h.feed(invite(transport="TCP"), itf=TCP, conn=7)
    assert sends[0].dest.conn == 7 and sends[0].dest.transport == "tcp"


def test_cancel_gets_200_cancels_branch_and_ends_with_487() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    sends = h.feed(invite(method="CANCEL"))
    assert statuses(sends) == [200]
    [cancel] = [m for m in to(sends, 5090) if isinstance(m, Request)]
    assert cancel.method == "CANCEL" and cancel.top_via.branch == fwd.top_via.branch
    h.feed(answer(cancel, 200), peer=("127.0.0.1", 5090))
    sends = h.feed(answer(fwd, 487), peer=("127.0.0.1", 5090))
    assert statuses(sends) == [487]
    assert [m.method for m in to(sends, 5090) if isinstance(m, Request)] == ["ACK"]


def test_cancel_before_any_provisional_waits_for_one() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    sends = h.feed(invite(method="CANCEL"))
    assert not [m for m in to(sends, 5090) if isinstance(m, Request)]  # §9.1
    sends = h.feed(answer(fwd, 100), peer=("127.0.0.1", 5090))
    assert [m.method for m in to(sends, 5090) if isinstance(m, Request)] == ["CANCEL"]


def test_cancel_without_context_is_forwarded_statelessly_or_481() -> None:
    # §16.10: the INVITE may have been forwarded statelessly (by us or another instance).
    h = Harness()
    fwd = forwarded(h, h.feed(invite(method="CANCEL")))
    assert fwd.method == "CANCEL" and statuses(h.sent) == []
    untrusted = Harness(trusted=())
    assert statuses(untrusted.feed(invite("sip:bob@far.example", method="CANCEL"))) == [481]


def test_ack_for_error_response_is_absorbed_and_2xx_ack_forwarded() -> None:
    h = Harness()
    assert statuses(h.feed(invite(mf=0))) == [483]
    assert h.feed(invite(method="ACK", mf=70, to_tag="x")) == []
    ack2 = invite(method="ACK", to_tag="b1", branch="z9hG4bKack2")
    fwd = forwarded(h, h.feed(ack2))
    assert fwd.method == "ACK"
    again = forwarded(h, h.feed(ack2))
    assert again.top_via.branch == fwd.top_via.branch  # §16.11: stateless, deterministic


def forking_router(targets: list[str], failover: list[str] | None = None) -> Any:
    class Fork:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            for t in targets:
                ctx.forward(t)
            if failover:
                ctx.set_failure_route(self.failure_route)

        def failure_route(self, response: Response, ctx: RouteContext) -> None:
            assert failover is not None
            ctx.forward(failover.pop(0))

    return Fork()


def test_parallel_fork_2xx_cancels_the_other_branch() -> None:
    h = Harness(forking_router(["sip:a@127.0.0.1:5090", "sip:b@127.0.0.1:5092"]))
    sends = h.feed(invite())
    a, b = forwarded(h, sends, 5090), forwarded(h, sends, 5092)
    h.feed(answer(b, 180, tag="bb"), peer=("127.0.0.1", 5092))
    sends = h.feed(answer(a, 200, tag="aa"), peer=("127.0.0.1", 5090))
    assert statuses(sends) == [200]
    assert [m.method for m in to(sends, 5092) if isinstance(m, Request)] == ["CANCEL"]
    sends = h.feed(answer(b, 487, tag="bb"), peer=("127.0.0.1", 5092))
    assert statuses(sends) == []  # the 487 of the cancelled branch stays here


def test_best_response_prefers_6xx_and_aggregates_challenges() -> None:
    h = Harness(forking_router(["sip:a@127.0.0.1:5090", "sip:b@127.0.0.1:5092",
                                "sip:c@127.0.0.1:5094"]))
    sends = h.feed(invite())
    a, b, c = (forwarded(h, sends, p) for p in (5090, 5092, 5094))
    h.feed(answer(a, 486), peer=("127.0.0.1", 5090))
    h.feed(answer(b, 401, extra='WWW-Authenticate: Digest realm="b"\r\n'),
           peer=("127.0.0.1", 5092))
    sends = h.feed(answer(c, 407, extra='Proxy-Authenticate: Digest realm="c"\r\n'),
                   peer=("127.0.0.1", 5094))
    [best] = [m for m in to(sends, 5091) if isinstance(m, Response)]
    assert best.status == 401  # 4xx class, 401/407 preferred over 486
    assert best.get_all("WWW-Authenticate") == ['Digest realm="b"']
    assert best.get_all("Proxy-Authenticate") == ['Digest realm="c"']


def test_6xx_stops_the_search() -> None:
    h = Harness(forking_router(["sip:a@127.0.0.1:5090", "sip:b@127.0.0.1:5092"]))
    sends = h.feed(invite())
    a, b = forwarded(h, sends, 5090), forwarded(h, sends, 5092)
    h.feed(answer(b, 180, tag="bb"), peer=("127.0.0.1", 5092))
    sends = h.feed(answer(a, 603), peer=("127.0.0.1", 5090))
    assert [m.method for m in to(sends, 5092) if isinstance(m, Request)] == ["CANCEL"]
    sends = h.feed(answer(b, 487, tag="bb"), peer=("127.0.0.1", 5092))
    assert statuses(sends) == [603]


def test_failure_route_serial_forking() -> None:
    h = Harness(forking_router(["sip:a@127.0.0.1:5090"], ["sip:b@127.0.0.1:5092"]))
    a = forwarded(h, h.feed(invite()), 5090)
    sends = h.feed(answer(a, 503), peer=("127.0.0.1", 5090))
    assert statuses(sends) == []  # not relayed: the failure route tries the next target
    b = forwarded(h, sends, 5092)
    sends = h.feed(answer(b, 200), peer=("127.0.0.1", 5092))
    assert statuses(sends) == [200]


def test_503_from_all_branches_is_sent_as_500() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    assert statuses(h.feed(answer(fwd, 503), peer=("127.0.0.1", 5090))) == [500]


def test_timer_c_cancels_and_answers_408() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    sends = h.tick(10.2)  # Timer C is 10 s in this harness
    assert statuses(sends) == [408]
    assert [m.method for m in to(sends, 5090) if isinstance(m, Request)] == ["CANCEL"]


def test_timer_b_without_any_response_gives_408() -> None:
    h = Harness()
    h.feed(invite())
    sends = h.tick(33)
    assert 408 in statuses(sends)
    retransmitted = [m for m in to(h.sent, 5090) if isinstance(m, Request)]
    assert len(retransmitted) == 7  # the INVITE plus six Timer A retransmissions


def test_async_routing_hook_is_awaited_by_the_adapter() -> None:
    class Slow:
        async def _lookup(self) -> None:
            return None

        def request_route(self, request: Request, ctx: RouteContext) -> Any:
            ctx.forward("sip:bob@127.0.0.1:5090")
            return self._lookup()

    h = Harness(Slow())
    sends = h.feed(invite())
    assert statuses(sends) == [100] and not to(sends, 5090)
    [pending] = h.awaits
    pending.awaitable.close()  # type: ignore[attr-defined]  # a coroutine, never awaited here
    resumed = h._collect(pending.resume(h.now))
    assert forwarded(h, resumed).uri == "sip:bob@127.0.0.1:5090"


def test_routing_hook_exception_gives_500_not_a_crash() -> None:
    class Broken:
        def request_route(self, request: Request, ctx: RouteContext) -> None:
            raise RuntimeError("bug in the script")

    h = Harness(Broken())
    assert statuses(h.feed(invite())) == [100, 500]


def test_response_not_via_us_is_dropped() -> None:
    h = Harness()
    resp = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 10.1.1.1:5060;branch=z9hG4bKx\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n")
    assert h.feed(resp) == []
    assert h.core.counters.drop_replies.value == 1


def test_response_towards_a_broadcast_sent_by_is_not_forwarded() -> None:
    h = Harness()
    resp = ("SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKnope\r\n"
            "Via: SIP/2.0/UDP 255.255.255.255:5060;branch=z9hG4bKy\r\n"
            "From: <sip:a@x>;tag=1\r\nTo: <sip:b@x>;tag=2\r\nCall-ID: q\r\nCSeq: 1 INVITE\r\n"
            "Content-Length: 0\r\n\r\n")
    assert h.feed(resp) == []
    assert h.core.counters.drop_replies.value == 1


def test_late_invite_retransmission_after_2xx_is_absorbed_and_ack_still_forwarded() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]
    sends = h.feed(invite())  # the caller did not see the 200 in time and retransmits
    assert sends == []  # RFC 6026 Accepted: no second forward, no second 100
    ack = forwarded(h, h.feed(invite(method="ACK", to_tag="b1")))
    assert ack.method == "ACK"


def test_late_2xx_after_timer_c_still_reaches_the_caller() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    assert statuses(h.tick(10.2)) == [408]
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]


def test_a_request_answered_keeps_no_context_while_its_transactions_wait() -> None:
    # Once the final response went upstream nothing can reach the response context: its
    # transactions wait out Timers J, K, L (up to 32 s) holding only what they resend.
    h = Harness()
    fwd = forwarded(h, h.feed(invite(method="BYE", to_tag="b1")))
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]
    assert h.core.transactions == 2  # server in Completed (Timer J), client (Timer K)
    (server,) = h.core.layer.servers.values()
    (client,) = h.core.layer.clients.values()
    assert server.owner is None and client.owner is None
    assert client.request is None and client.data == b""
    assert server.request == RequestSummary("BYE", "c1", "b1")
    # What still comes is answered as before, without the context.
    assert statuses(h.feed(invite(method="BYE", to_tag="b1"))) == [200]  # from Timer J's copy
    assert h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090)) == []  # absorbed (Timer K)


def test_an_invite_answered_2xx_keeps_no_context_while_timer_l_runs() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    h.feed(answer(fwd, 180), peer=("127.0.0.1", 5090))
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]
    (server,) = h.core.layer.servers.values()  # Accepted, RFC 6026 Timer L
    assert server.owner is None
    assert server.request == RequestSummary("INVITE", "c1", None)
    cancel = h.feed(invite(method="CANCEL"))
    assert statuses(cancel) == [200]  # too late to cancel anything (§9.2)
    assert to(cancel, 5090) == []
    # A retransmitted 2xx still reaches the caller (statelessly, §16.7).
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]


def test_our_via_is_recognised_by_its_line_while_the_branch_is_open() -> None:
    h = Harness()
    fwd = forwarded(h, h.feed(invite()))
    line = fwd.top_via_line()
    assert line is not None and line in h.core._own_vias
    # The same Via in another spelling is parsed and found ours all the same.
    ringing = answer(fwd, 180).replace("Via: SIP", "v: SIP", 1)
    assert statuses(h.feed(ringing, peer=("127.0.0.1", 5090))) == [180]
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]
    assert h.core._own_vias == {}  # forgotten with the context
    # A 2xx retransmission (no transaction any more) is parsed, checked and relayed.
    assert statuses(h.feed(answer(fwd, 200), peer=("127.0.0.1", 5090))) == [200]
