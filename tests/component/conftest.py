"""Fixtures the component tests share."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from shared.discovery import DiscoveryConfig
from shared.discovery.embedded import RegistryServer

# The embedded registry server and the discovery settings that point a service at it.
Registry = tuple[RegistryServer, DiscoveryConfig]


@pytest.fixture
async def registry() -> AsyncIterator[Registry]:
    server = RegistryServer()
    url = await server.start()
    yield server, DiscoveryConfig(url=url, ttl=2.0)
    await server.stop()
