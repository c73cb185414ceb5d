"""``[events] consumer_queue*``: the gateway's queue name and its RabbitMQ bounds."""

from __future__ import annotations

import pytest

from shared.config import ConfigError
from shared.events.config import EventsConfig


def test_the_default_queue_is_named_after_the_gateway_instance() -> None:
    cfg = EventsConfig(exchange="sipmesh.events")
    assert cfg.gateway_queue("gw-7f9c", 8888) == "sipmesh.events.gateway.gw-7f9c-8888"
    assert cfg.gateway_queue("gw-7f9c", 8889) != cfg.gateway_queue("gw-7f9c", 8888)
    assert cfg.gateway_queue("gw-7f9c", 0) is None  # nothing names it across restarts
    named = EventsConfig(consumer_queue="billing-gw")
    assert named.gateway_queue("gw-7f9c", 0) == "billing-gw"


def test_the_bounds_become_queue_arguments() -> None:
    assert EventsConfig().queue_arguments() == {
        "x-expires": 3_600_000, "x-max-length": 100_000, "x-overflow": "drop-head"}
    assert EventsConfig(consumer_queue_expires=0, consumer_queue_max_length=0,
                        ).queue_arguments() == {}
    assert EventsConfig(consumer_queue_expires=0.25, consumer_queue_max_length=5,
                        consumer_queue_overflow="reject-publish").queue_arguments() == {
        "x-expires": 250, "x-max-length": 5, "x-overflow": "reject-publish"}


@pytest.mark.parametrize("bad", [
    {"consumer_queue_expires": -1}, {"consumer_queue_max_length": -5},
    {"consumer_queue_overflow": "drop-tail"}, {"consumer_queue": "amq.gw"}])
def test_bad_bounds_are_configuration_errors(bad: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        EventsConfig(**bad)  # type: ignore[arg-type]
