"""The [edge] configuration: embedded defaults, environment overrides, clear errors."""

from __future__ import annotations

import pytest

from services.edge.addresses import Interface
from services.edge.config import EdgeConfigError, load_config, parse_listen


def test_defaults_listen_on_loopback_5060_udp_and_tcp() -> None:
    config = load_config(environ={})
    assert config.interfaces() == [Interface("udp", "127.0.0.1", 5060),
                                   Interface("tcp", "127.0.0.1", 5060)]
    assert config.workers == 1 and config.t1 == 0.5 and config.timer_c == 180.0


def test_environment_overrides() -> None:
    config = load_config(environ={
        "SIPMESH_EDGE_LISTEN": "udp:127.0.0.1:5070,tcp:[::1]:5071",
        "SIPMESH_EDGE_T1": "0.25",
        "SIPMESH_EDGE_STATIC_ROUTES": "bob@example.com=sip:bob@192.0.2.1",
        "SIPMESH_EDGE_WORKERS": "2",
    })
    assert config.interfaces()[1] == Interface("tcp", "::1", 5071)
    assert config.t1 == 0.25 and config.workers == 2
    assert config.routes() == {"bob@example.com": "sip:bob@192.0.2.1"}


@pytest.mark.parametrize("bad", ["udp:127.0.0.1", "sctp:127.0.0.1:5060", "udp:host:5060",
                                 "udp:127.0.0.1:99999"])
def test_bad_listen_values_are_named(bad: str) -> None:
    with pytest.raises(EdgeConfigError, match="listen"):
        parse_listen(bad)


def test_bad_values_fail_at_load() -> None:
    with pytest.raises(EdgeConfigError, match="static_routes"):
        load_config(environ={"SIPMESH_EDGE_STATIC_ROUTES": "nonsense"})
    with pytest.raises(EdgeConfigError, match="workers"):
        load_config(environ={"SIPMESH_EDGE_WORKERS": "0"})
    with pytest.raises(EdgeConfigError, match="trusted"):
        load_config(environ={"SIPMESH_EDGE_TRUSTED": "not-a-net"})
    with pytest.raises(EdgeConfigError, match="users"):
        load_config(environ={"SIPMESH_EDGE_USERS": "alice"})
    assert load_config(environ={"SIPMESH_EDGE_USERS": "alice:a:b"}).user_table() == {
        "alice": "a:b"}
