"""OpenSIPS subscriber socket syntaxes."""

from __future__ import annotations

import pytest

from gateway.events.sockets import (
    DatagramSocket,
    JsonRpcSocket,
    RabbitMQSocket,
    SocketSyntaxError,
    StreamSocket,
    display,
    parse_socket,
)


@pytest.mark.parametrize(
    ("text", "parsed", "canonical"),
    [
        ("udp:127.0.0.1:8888", DatagramSocket("127.0.0.1", 8888), "udp:127.0.0.1:8888"),
        ("UDP:localhost:9", DatagramSocket("localhost", 9), "udp:localhost:9"),
        ("udp:[::1]:5000", DatagramSocket("::1", 5000), "udp:[::1]:5000"),
        ("tcp:10.1.2.3:7000", StreamSocket("10.1.2.3", 7000), "tcp:10.1.2.3:7000"),
        ("jsonrpc:127.0.0.1:8080", JsonRpcSocket("127.0.0.1", 8080), "jsonrpc:127.0.0.1:8080"),
        ("jsonrpc:127.0.0.1:8080/cdr.push", JsonRpcSocket("127.0.0.1", 8080, "cdr.push"),
         "jsonrpc:127.0.0.1:8080/cdr.push"),
        ("rabbitmq:127.0.0.1/sipevents", RabbitMQSocket("127.0.0.1", "sipevents"),
         "rabbitmq:guest:guest@127.0.0.1:5672/sipevents"),
        ("rabbitmq:bill:s3cret@mq.local:5673/cdrs?acc.cdr",
         RabbitMQSocket("mq.local", "acc.cdr", 5673, "bill", "s3cret", "cdrs"),
         "rabbitmq:bill:s3cret@mq.local:5673/cdrs?acc.cdr"),
        ("rabbitmq:bill@mq.local/key", RabbitMQSocket("mq.local", "key", user="bill"),
         "rabbitmq:bill:guest@mq.local:5672/key"),
    ],
)
def test_valid_sockets_parse_to_their_canonical_form(
    text: str, parsed: object, canonical: str
) -> None:
    sock = parse_socket(text)
    assert sock == parsed
    assert str(sock) == canonical
    assert parse_socket(canonical) == sock


def test_listings_never_show_the_rabbitmq_password() -> None:
    shown = display(parse_socket("rabbitmq:bill:s3cret@mq.local/cdrs?acc"))
    assert "s3cret" not in shown
    assert shown == "rabbitmq:bill@mq.local:5672/cdrs?acc"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("127.0.0.1:8888", "unknown socket type"),
        ("sctp:127.0.0.1:8888", "unknown socket type"),
        ("udp:127.0.0.1", "expected udp:host:port"),
        ("udp:127.0.0.1:0", "out of range"),
        ("tcp:127.0.0.1:70000", "out of range"),
        ("tcp:bad host:80", "expected tcp:host:port"),
        ("jsonrpc:127.0.0.1:80/bad method", "bad method"),
        ("rabbitmq:127.0.0.1", "routing_key"),
        ("rabbitmq:127.0.0.1/", "missing routing key"),
        ("rabbitmq:127.0.0.1/ex?", "missing routing key"),
        ("rabbitmq::pw@127.0.0.1/k", "empty user"),
    ],
)
def test_bad_sockets_give_a_clear_error(text: str, reason: str) -> None:
    with pytest.raises(SocketSyntaxError, match=reason):
        parse_socket(text)
