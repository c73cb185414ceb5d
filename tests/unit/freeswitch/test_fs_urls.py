"""fs:// URLs as OpenSIPS writes them, and SipMesh's named parameters."""

from __future__ import annotations

import pytest

from services.freeswitch.boxes import (
    BoxSpec,
    BoxUrlError,
    events_param,
    names_port,
    parse_fs_url,
)


def test_opensips_driver_form() -> None:
    spec = parse_fs_url("fs://:ClueCon@10.0.0.10")
    assert (spec.host, spec.port, spec.user, spec.password) == ("10.0.0.10", 8021, "", "ClueCon")
    assert spec.id == "10.0.0.10:8021" and spec.events == () and spec.sip_uri == ""


def test_opensips_scripting_form_with_events_and_user() -> None:
    spec = parse_fs_url("fs://ops:s%40cret@FS1.example.com:8022?CHANNEL_STATE,DTMF")
    assert spec.host == "fs1.example.com" and spec.port == 8022
    assert (spec.user, spec.password) == ("ops", "s@cret")
    assert spec.events == ("CHANNEL_STATE", "DTMF")


def test_scheme_is_optional_as_in_fs_subscribe() -> None:
    assert parse_fs_url(":ClueCon@10.0.0.11:8021?DTMF,BACKGROUND_JOB").events == (
        "DTMF", "BACKGROUND_JOB")


def test_named_parameters() -> None:
    spec = parse_fs_url("fs://:pw@127.0.0.1:9021?events=CHANNEL_CREATE,CUSTOM sofia::register"
                        "&group=media&sip=sip:127.0.0.1:5080;transport=udp")
    assert spec.events == ("CHANNEL_CREATE", "CUSTOM sofia::register")
    assert spec.group == "media" and spec.sip_uri == "sip:127.0.0.1:5080;transport=udp"


def test_ipv6_host() -> None:
    spec = parse_fs_url("fs://:pw@[::1]:9000")
    assert spec.host == "::1" and spec.port == 9000 and spec.id == "[::1]:9000"


def test_url_round_trip_hides_the_password_unless_asked() -> None:
    spec = BoxSpec("10.0.0.1", 8021, "pw", "", ("DTMF",), "media", "sip:10.0.0.1:5080")
    assert "pw" not in spec.url()
    again = parse_fs_url(spec.url(secret=True))
    assert (again.host, again.password, again.events, again.group, again.sip_uri) == (
        "10.0.0.1", "pw", ("DTMF",), "media", "sip:10.0.0.1:5080")


@pytest.mark.parametrize("url", [
    "", "http://x", "fs://:pw@", "fs://:pw@host:0", "fs://:pw@host:70000", "fs://:pw@host:abc",
    "fs://:pw@[::1", "fs://:pw@h/x y", "fs://:pw@host?sip=http://x",
])
def test_bad_urls(url: str) -> None:
    with pytest.raises(BoxUrlError):
        parse_fs_url(url)


def test_password_needed_unless_naming_a_known_box() -> None:
    with pytest.raises(BoxUrlError, match="password"):
        parse_fs_url("fs://10.0.0.1")
    assert parse_fs_url("10.0.0.1:8021", need_password=False).id == "10.0.0.1:8021"


def test_names_port() -> None:
    assert names_port("10.0.0.1:8021") and names_port("fs://:p@h:1?x=y")
    assert not names_port("10.0.0.1") and not names_port("fs://:p@h?DTMF")
    assert names_port("[::1]:5") and not names_port("[::1]")


def test_events_param_accepts_lists_and_strings() -> None:
    assert events_param(["DTMF", "CHANNEL_CREATE,DTMF"]) == ("DTMF", "CHANNEL_CREATE")
    assert events_param("DTMF CHANNEL_CREATE") == ("DTMF", "CHANNEL_CREATE")
    assert events_param("CUSTOM sofia::register,DTMF") == ("CUSTOM sofia::register", "DTMF")


def test_events_with_semicolons_for_comma_separated_environment_lists() -> None:
    # SIPMESH_FREESWITCH_BOXES splits boxes on commas: events are written with ';' there.
    spec = parse_fs_url("fs://:pw@10.0.0.1?events=CHANNEL_CREATE;DTMF&sip=sip:10.0.0.1;lr")
    assert spec.events == ("CHANNEL_CREATE", "DTMF") and spec.sip_uri == "sip:10.0.0.1;lr"
    assert parse_fs_url("fs://:pw@10.0.0.1?CHANNEL_CREATE;DTMF").events == (
        "CHANNEL_CREATE", "DTMF")
