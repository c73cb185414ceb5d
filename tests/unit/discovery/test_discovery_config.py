"""open_registry builds the configured backend; Consul's client is imported only then."""

from __future__ import annotations

import pytest

from shared.config import ConfigError
from shared.discovery import DiscoveryConfig, open_registry
from shared.discovery.consul_backend import ConsulRegistry
from shared.discovery.embedded import HttpRegistry


def test_embedded_is_the_default() -> None:
    registry = open_registry(DiscoveryConfig(url="http://127.0.0.1:9"))
    assert isinstance(registry, HttpRegistry)


def test_consul_gets_the_address_token_and_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CONSUL_HTTP_ADDR", raising=False)
    registry = open_registry(DiscoveryConfig(backend="consul", consul_check="http", ttl=6.0))
    assert isinstance(registry, ConsulRegistry)
    assert (registry.addr, registry.check, registry.http_interval) == ("127.0.0.1:8500",
                                                                       "http", 2.0)
    monkeypatch.setenv("CONSUL_HTTP_ADDR", "10.0.0.5:8501")
    from_env = open_registry(DiscoveryConfig(backend="consul"))
    assert isinstance(from_env, ConsulRegistry) and from_env.addr == "10.0.0.5:8501"


def test_an_unknown_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="embedded or consul"):
        open_registry(DiscoveryConfig(backend="etcd"))
