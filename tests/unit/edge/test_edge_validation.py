"""§16.3 request validation on its own (services/edge/validation.py), no proxy core."""

from __future__ import annotations

from services.edge import validation
from services.edge.validation import Refusal
from shared.sip import Uri
from tests.unit.transaction.sipmsg import request

OURS = {("10.0.0.9", 5060)}


def is_myself(uri: Uri) -> bool:
    return (uri.host, uri.port or 5060) in OURS


def test_a_plain_request_goes_on_with_its_loop_hash() -> None:
    req = request("INVITE")
    refusal, hashed = validation.check(req, is_myself, OURS)
    assert refusal is None
    assert hashed == validation.loop_hash(req) and len(hashed) == 16


def test_refusals_in_the_order_of_section_16_3() -> None:
    assert validation.check(request("INVITE", uri="tel:+15551234"), is_myself, OURS)[0] \
        == Refusal(416, bad_uri=True)
    assert validation.check(request("INVITE", max_forwards=0), is_myself, OURS)[0] \
        == Refusal(483)
    options = validation.check(request("OPTIONS", max_forwards=0), is_myself, OURS)[0]
    assert options is not None and options.status == 200
    assert ("Allow", validation.ALLOW) in options.headers
    to_us = validation.check(request("OPTIONS", uri="sip:10.0.0.9"), is_myself, OURS)[0]
    assert to_us is not None and to_us.status == 200
    required = validation.check(request("INVITE", extra="Proxy-Require: foo, bar\r\n"),
                                is_myself, OURS)[0]
    assert required == Refusal(420, (("Unsupported", "foo, bar"),))
    # Proxy-Require is not checked for CANCEL (§16.3 step 5).
    cancel = request("CANCEL", extra="Proxy-Require: foo\r\n")
    assert validation.check(cancel, is_myself, OURS)[0] is None


def test_our_via_with_the_same_hash_is_a_loop() -> None:
    first = request("INVITE")
    hashed = validation.loop_hash(first)
    back = request("INVITE", extra=f"Via: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{hashed}.0\r\n")
    assert validation.loop_hash(back) == hashed  # Vias are not part of the hash
    assert validation.check(back, is_myself, OURS) == (Refusal(482), hashed)
    # The same Via from another host is not ours: no loop.
    elsewhere = request(
        "INVITE", extra=f"Via: SIP/2.0/UDP 10.0.0.7:5060;branch=z9hG4bK{hashed}.0\r\n")
    assert validation.check(elsewhere, is_myself, OURS)[0] is None
