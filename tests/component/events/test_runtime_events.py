"""What the runtime gives every service for events and load (real HTTP, real registry,
real PostgreSQL): the bus picked by ``[events]``, E_CORE_THRESHOLD on slow MI requests,
``events:`` statistics, SIP-only ``load``, and the gateway's store choice."""

from __future__ import annotations

import sqlite3
import uuid
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from shared.config import ConfigError, load_section
from shared.discovery import DiscoveryConfig, Instance
from shared.discovery.embedded import RegistryServer
from shared.discovery.memory import MemoryRegistry
from shared.events.bus import EmbeddedEventBus
from shared.events.config import EventsConfig
from shared.events.forward import ForwardingEventBus
from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventValidationError
from shared.rpc import JsonRpcClient
from shared.service import ServiceRuntime
from shared.stats.load import ProcessLoad
from shared.stats.registry import UnknownStatisticError
from tests.integration.mesh_events.meshkit import UdpSubscriber

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
DISC = DiscoveryConfig(url="http://127.0.0.1:9", ttl=5)


def test_the_bus_follows_the_events_section() -> None:
    assert isinstance(ServiceRuntime("a", discovery=DISC, events=EventsConfig()).events,
                      ForwardingEventBus)
    rmq = ServiceRuntime("b", discovery=DISC, events=EventsConfig(
        rabbitmq_url="amqp://guest:guest@127.0.0.1:5672/", exchange="x.y"))
    assert isinstance(rmq.events, RabbitMQEventBus) and rmq.events.exchange_name == "x.y"
    local = ServiceRuntime("c", discovery=DISC, events=EventsConfig(), local_events=True)
    assert isinstance(local.events, EmbeddedEventBus)
    assert local.events.service == "c" and local.events.node == local.instance_id
    strict = ServiceRuntime("d", discovery=DISC, events=EventsConfig(strict=True))
    with pytest.raises(EventValidationError):
        strict.events.publish("E_CORE_THRESHOLD", {"source": "x"})


def test_bad_events_settings_are_config_errors() -> None:
    for env in ({"SIPMESH_EVENTS_BUFFER_SIZE": "0"}, {"SIPMESH_EVENTS_EXEC_THRESHOLD": "-1"},
                {"SIPMESH_EVENTS_RABBITMQ_URL": "localhost"},
                {"SIPMESH_EVENTS_FORWARD_TIMEOUT": "0"}):
        with pytest.raises(ConfigError):
            load_section(EventsConfig, "events", environ=env)


def test_report_slow_raises_e_core_threshold_over_the_threshold_only() -> None:
    off = ServiceRuntime("a", discovery=DISC, events=EventsConfig())
    assert not off.report_slow("msg processing", 10**6, "INVITE sip:x SIP/2.0")
    rt = ServiceRuntime("b", discovery=DISC, events=EventsConfig(exec_threshold=500,
                                                                   strict=True))
    assert not rt.report_slow("msg processing", 500, "at the threshold")
    assert rt.report_slow("msg processing", 501, "INVITE sip:x SIP/2.0")
    assert rt.events.buffered == 1
    snap = rt.stats.get_statistics(["events:"])
    assert snap["events:raised"] == 1 and snap["events:buffered"] == 1


def test_load_names_depend_on_handling_sip() -> None:
    gw = ServiceRuntime("gw", discovery=DISC, events=EventsConfig(), sip_handling=False)
    assert "load:load" not in gw.stats.get_statistics(["load:"])
    assert "load:load-all" in gw.stats.get_statistics(["load:"])
    with pytest.raises(UnknownStatisticError):
        gw.stats.get_statistics(["load:load1m"])
    edge = ServiceRuntime("edge", discovery=DISC, events=EventsConfig())
    assert "load:load" not in edge.stats.get_statistics(["load:"])
    edge.meta["sip_udp"] = "sip:127.0.0.1:5060;transport=udp"  # what the edge publishes
    got = edge.stats.get_statistics(["load:"])
    assert {"load:load", "load:load1m", "load:load10m", "load:load-proc-0"} <= set(got)


async def test_slow_mi_request_raises_the_event_to_the_gateway_subscribers(
    tmp_path: Path,
) -> None:
    """In-process, the gateway's own runtime is timed too: its local MI (what other
    gateways and the forwarders call) raises E_CORE_THRESHOLD, delivered locally."""
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw, _ = build_gateway(GatewayConfig(port=0), disc,
                          EventsConfig(store=str(tmp_path / "s.sqlite"), exec_threshold=1))
    await gw.start()
    sub = await UdpSubscriber.open()
    public, local = JsonRpcClient(f"{gw.base_url}/mi"), JsonRpcClient(gw.mi_url)
    try:
        await public.call("event_subscribe", ["E_CORE_THRESHOLD", sub.socket, 60])
        await local.call("uptime")
        got = await sub.next()
        assert got["params"]["source"] == "mi command"
        assert got["params"]["extra"] == f"uptime on {gw.instance_id}"
    finally:
        await public.close()
        await local.close()
        sub.close()
        await gw.stop()
        await registry.stop()


async def test_gateway_keeps_subscriptions_in_postgresql() -> None:
    sock = f"udp:127.0.0.1:{uuid.uuid4().int % 50000 + 10000}"
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    cfg = EventsConfig(store=PG_DSN)
    try:
        for step in ("subscribe", "check"):
            gw, _ = build_gateway(GatewayConfig(port=0), disc, cfg)
            await gw.start()
            client = JsonRpcClient(f"{gw.base_url}/mi")
            try:
                if step == "subscribe":
                    await client.call("event_subscribe", ["E_ACC_CDR", sock, 120])
                else:
                    got = await client.call("subscribers_list", ["E_ACC_CDR", sock])
                    assert 100 < got["expire"] <= 120
                    await client.call("event_subscribe", ["E_ACC_CDR", sock, 0])
            finally:
                await client.close()
                await gw.stop()
    finally:
        await registry.stop()


async def test_default_store_is_a_sqlite_file_in_the_state_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``make run`` configures nothing: subscriptions go to $XDG_STATE_HOME/sipmesh."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw, _ = build_gateway(GatewayConfig(port=0), disc, EventsConfig())
    await gw.start()
    client = JsonRpcClient(f"{gw.base_url}/mi")
    try:
        await client.call("event_subscribe", ["E_ACC_CDR", "udp:127.0.0.1:9", 60])
    finally:
        await client.close()
        await gw.stop()
        await registry.stop()
    path = tmp_path / "sipmesh" / "event_subscribers.sqlite"
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT event, socket FROM event_subscribers").fetchall()
    assert rows == [("E_ACC_CDR", "udp:127.0.0.1:9")]


class _FixedLoad:
    """A load sampler reporting fixed ratios (the real ones are tested in unit/stats)."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def install(self, loop: object = None) -> None: ...

    def uninstall(self) -> None: ...

    def snapshot(self) -> ProcessLoad:
        return ProcessLoad(self.ratio, self.ratio, self.ratio)


async def test_mesh_load_is_exact_not_an_average_of_rounded_percents(tmp_path: Path) -> None:
    """Three SIP processes at 0.45 %, 0.45 % and 0.65 %: each rounds to 0, 0, 1 (mean
    0.33 -> 0), but the mesh's load is 0.52 % -> 1, as OpenSIPS sums busy time."""
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw, _ = build_gateway(GatewayConfig(port=0), disc,
                          EventsConfig(store=str(tmp_path / "s.sqlite")))
    edges = [ServiceRuntime("edge", discovery=disc, events=EventsConfig(), sip_handling=True)
             for _ in range(3)]
    for n, rt in enumerate(edges):
        rt.instance_id += f"-{n}"
    runtimes = [gw, *edges]
    client = None
    try:
        for rt, ratio in zip(runtimes, (0.0, 0.0045, 0.0045, 0.0065), strict=True):
            await rt.start()
            assert rt.load_sampler is not None
            rt.load_sampler.uninstall()
            rt.load_sampler = _FixedLoad(ratio)
        client = JsonRpcClient(f"{gw.base_url}/mi")
        got = await client.call("get_statistics", [["load:"]])
        assert got["load:load"] == 1 and got["load:load1m"] == 1
        assert got["load:load-all"] == 0  # 1.55 % over four processes
        assert sorted(v for k, v in got.items() if k.startswith("load:load-proc-")) == [
            0, 0, 0, 1]
        assert await client.call("get_statistics", [["load1m"]]) == {"load:load1m": 1}
        # Internal commands are not offered on the public endpoint.
        assert "load_snapshot" not in await client.call("which")
    finally:
        if client is not None:
            await client.close()
        for rt in reversed(runtimes):
            await rt.stop()
        await registry.stop()


async def test_a_standalone_process_does_not_wait_at_stop_for_a_gateway_none_can_start(
) -> None:
    # In-process registry (a service started alone, no `sipmesh up` around): its events
    # are forwarded to a gateway that cannot appear, so stopping does not wait for one.
    alone = MemoryRegistry()
    rt = ServiceRuntime("edge", discovery=DISC, events=EventsConfig(), registry=alone)
    assert await rt.events_stop_wait() == 2.0  # nothing held: the usual bound
    rt.events.publish("E_CORE_THRESHOLD", {"source": "x", "time": 1, "extra": ""})
    assert rt.events.buffered == 1
    assert await rt.events_stop_wait() == 0.0
    # A gateway in that registry (in the same process): the events wait for it, as in a mesh.
    await alone.register(Instance("gateway", "gw-1", "127.0.0.1", 9), ttl=60)
    assert await rt.events_stop_wait() == 2.0
    # A mesh's registry (a gateway may come back any time): the bounded wait, as before.
    meshed = ServiceRuntime("edge", discovery=DISC, events=EventsConfig())
    meshed.events.publish("E_CORE_THRESHOLD", {"source": "x", "time": 1, "extra": ""})
    assert await meshed.events_stop_wait() == 2.0
