"""Fixtures the operator tests share: a HEP v3 capture server over UDP (the fake
collector of tests/support/hep_collector.py) on a port reserved once per test module, so
a module's mesh can be configured with it before the collector listens."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from tests.support.hep_collector import HepCollector
from tests.support.ports import reserve_port


@pytest.fixture(scope="module")
def collector_port() -> int:
    return reserve_port()


@pytest.fixture
async def collector(collector_port: int) -> AsyncIterator[HepCollector]:
    loop = asyncio.get_running_loop()
    c = HepCollector()
    await loop.create_datagram_endpoint(lambda: c, local_addr=("127.0.0.1", collector_port))
    yield c
    c.close()
