"""Digest challenges and credentials (RFC 2617, RFC 7616, RFC 8760, RFC 3261 §22.4)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.sip import (
    DigestChallenge,
    SipParseError,
    answer_challenge,
    compute_response,
    parse_challenge,
    parse_credentials,
    parse_message,
)
from tests.unit.sip.helpers import invite


def test_rfc2617_md5_qop_auth_vector() -> None:
    # RFC 2617 §3.5.
    assert (
        compute_response(
            username="Mufasa",
            password="Circle Of Life",
            realm="testrealm@host.com",
            method="GET",
            uri="/dir/index.html",
            nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093",
            qop="auth",
            nc="00000001",
            cnonce="0a4f113b",
        )
        == "6629fae49393a05397450978507c4ef1"
    )


@pytest.mark.parametrize(
    ("algorithm", "expected"),
    [
        ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
        ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
    ],
)
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    # RFC 7616 §3.9.1 (SHA-256 is the RFC 8760 algorithm for SIP).
    assert (
        compute_response(
            username="Mufasa",
            password="Circle of Life",
            realm="http-auth@example.org",
            method="GET",
            uri="/dir/index.html",
            nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
            qop="auth",
            nc="00000001",
            cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
            algorithm=algorithm,
        )
        == expected
    )


def test_parse_and_render_challenge_round_trip() -> None:
    # RFC 3261 §22.4 / §25.1 example shape: commas inside quoted values are data.
    text = (
        'Digest realm="atlanta.com", domain="sip:ss1.carrier.com, sip:ss2.carrier.com", '
        'qop="auth,auth-int", nonce="f84f1cec41e6cbe5aea9c8e88d359", opaque="", '
        "stale=FALSE, algorithm=SHA-256"
    )
    challenge = parse_challenge(text)
    assert challenge.realm == "atlanta.com"
    assert challenge.domain == "sip:ss1.carrier.com, sip:ss2.carrier.com"
    assert challenge.qop == ["auth", "auth-int"]
    assert challenge.opaque == "" and challenge.stale is False
    assert challenge.algorithm == "SHA-256"
    rendered = str(challenge)
    assert rendered.startswith('Digest realm="atlanta.com", nonce="f84f1cec41e6cbe5aea9c8e88d359"')
    assert "algorithm=SHA-256" in rendered and 'qop="auth,auth-int"' in rendered
    assert parse_challenge(rendered) == challenge


def test_answer_challenge_then_verify_like_a_registrar() -> None:
    challenge = DigestChallenge(realm="example.com", nonce="n0nce", qop=["auth"], opaque="op")
    creds = answer_challenge(
        challenge,
        username="alice",
        password="s3cret",
        method="REGISTER",
        uri="sip:example.com",
        cnonce="c1",
        nc=1,
    )
    assert (creds.qop, creds.nc, creds.cnonce, creds.opaque) == ("auth", "00000001", "c1", "op")
    # The header goes on the wire and comes back through the message parser.
    msg = parse_message(invite(Authorization=str(creds)))
    parsed = parse_credentials(msg.get("Authorization") or "")
    assert parsed == creds
    assert parsed.verify("s3cret", "REGISTER")
    assert not parsed.verify("wrong", "REGISTER")
    assert not parsed.verify("s3cret", "INVITE")


@pytest.mark.parametrize("algorithm", ["MD5", "SHA-256", "MD5-sess", "SHA-256-sess"])
def test_every_algorithm_round_trips(algorithm: str) -> None:
    challenge = DigestChallenge(realm="r", nonce="n", qop=["auth"], algorithm=algorithm)
    creds = answer_challenge(
        challenge,
        username="u",
        password="p",
        method="INVITE",
        uri="sip:b@r",
        cnonce="c",
    )
    assert parse_credentials(str(creds)).verify("p", "INVITE")


def test_rfc2069_style_without_qop() -> None:
    challenge = parse_challenge('Digest realm="r", nonce="n"')
    creds = answer_challenge(
        challenge,
        username="u",
        password="p",
        method="BYE",
        uri="sip:b@r",
        cnonce="unused",
    )
    assert creds.qop is None and creds.nc is None and creds.cnonce is None
    assert "qop" not in str(creds)
    assert parse_credentials(str(creds)).verify("p", "BYE")


def test_unknown_algorithm_never_verifies() -> None:
    creds = parse_credentials(
        'Digest username="u", realm="r", nonce="n", uri="sip:x", response="00", algorithm=FOO'
    )
    assert not creds.verify("p", "INVITE")


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ('Digest username="u", realm="r", nonce="n", uri="sip:x"', "missing response"),
        ("Basic dXNlcjpwYXNz", "unsupported authentication scheme"),
        ('Digest username="u", realm="r, nonce="n"', "unterminated quoted string"),
        ('Digest username="u" realm', "malformed parameter"),
        (
            'Digest username="u", realm="r", nonce="n", uri="sip:x", response="1", qop=auth',
            "qop without nc/cnonce",
        ),
    ],
)
def test_bad_credentials_are_400(text: str, detail: str) -> None:
    with pytest.raises(SipParseError) as caught:
        parse_credentials(text)
    assert caught.value.status == 400
    assert detail in caught.value.detail


def test_challenge_without_nonce_is_400() -> None:
    with pytest.raises(SipParseError) as caught:
        parse_challenge('Digest realm="r"', "Proxy-Authenticate")
    assert "missing nonce in Proxy-Authenticate" in str(caught.value)


# -- the one-regex path for well-formed parameter lists ----------------------------------------
_ATOMS = st.sampled_from(['username', 'realm', 'nonce', 'uri', 'qop', 'nc', 'x-Y', '=', ',',
                          ' ', '"', '\\', 'a b', 'sip:u@h;p=1', '""', '"v, w"', '"q\\"x"',
                          '\t', 'MD5'])


@given(st.lists(_ATOMS, max_size=14).map("".join))
def test_fast_parameter_path_agrees_with_the_general_one(rest: str) -> None:
    from shared.sip.digest import _fast_params, _general_params

    fast = _fast_params(rest)
    if fast is None:
        return  # the general path decides (and explains its 400)
    assert fast == _general_params(rest, "Authorization")


def test_fast_path_takes_a_phones_credentials_and_leaves_quoted_pairs_to_the_other() -> None:
    from shared.sip.digest import _fast_params

    text = ('username="bob", realm="example.com", nonce="5f-1.ab", uri="sip:example.com",'
            ' response="0123abcd", algorithm=MD5, cnonce="c1", qop=auth, nc=00000001')
    assert _fast_params(text) == {
        "username": "bob", "realm": "example.com", "nonce": "5f-1.ab",
        "uri": "sip:example.com", "response": "0123abcd", "algorithm": "MD5",
        "cnonce": "c1", "qop": "auth", "nc": "00000001"}
    escaped = text.replace('cnonce="c1"', 'cnonce="c\\"1"')
    assert _fast_params(escaped) is None
    assert parse_credentials("Digest " + escaped).cnonce == 'c"1'


@given(realm=st.sampled_from(["example.com", 'we"ird', "a\\b", ""]),
       nonce=st.sampled_from(["5f-1.ab", 'n"q', ""]), stale=st.booleans(),
       algorithm=st.sampled_from(["MD5", "SHA-256"]),
       qop=st.sampled_from([[], ["auth"], ["auth", "auth-int"]]))
def test_challenge_rendering_fast_path_matches_the_general_one(
        realm: str, nonce: str, stale: bool, algorithm: str, qop: list[str]) -> None:
    challenge = DigestChallenge(realm=realm, nonce=nonce, algorithm=algorithm, qop=qop,
                                stale=stale)
    assert str(challenge) == challenge._render_general()
    assert parse_challenge(str(challenge)) == challenge
