"""The embedded-mode path, in one process but over real HTTP and a real registry: a
service's events wait in its buffer while no gateway is registered, then reach the
subscribers of the gateway that comes up (subscriptions reloaded from the store), in
order, once each; ``event_ingest`` answers bad input with clear errors."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from shared.discovery import DiscoveryConfig, open_registry
from shared.discovery.embedded import RegistryServer
from shared.events.config import EventsConfig
from shared.events.forward import INGEST_METHOD, ForwardingEventBus
from shared.events.schema import EventCatalog, default_contracts_dir
from shared.rpc import JsonRpcClient, RpcError
from shared.service import RuntimeConfig, ServiceRuntime
from tests.integration.mesh_events.meshkit import UdpSubscriber

EVENT = "E_UL_AOR_INSERT"


async def _gateway(disc: DiscoveryConfig, store: Path) -> ServiceRuntime:
    rt, _ = build_gateway(GatewayConfig(port=0), disc, EventsConfig(store=str(store)))
    await rt.start()
    return rt


async def test_events_wait_for_a_gateway_then_arrive_in_order(tmp_path: Path) -> None:
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    store = tmp_path / "subs.sqlite"
    sub = await UdpSubscriber.open()
    svc = ServiceRuntime("registrar", config=RuntimeConfig(), discovery=disc,
                         events=EventsConfig(strict=True))
    gw2 = None
    try:
        gw1 = await _gateway(disc, store)
        client = JsonRpcClient(f"{gw1.base_url}/mi")
        assert await client.call("event_subscribe", [EVENT, sub.socket, 600]) == "OK"
        await client.close()
        await gw1.stop()  # subscription kept in the store only
        await svc.start()
        assert isinstance(svc.events, ForwardingEventBus)
        for n in range(50):
            svc.events.publish(EVENT, {"aor": f"user{n}@example.com"})
        assert not await svc.events.flush(0.5)  # nowhere to go: still buffered
        assert svc.events.buffered == 50
        gw2 = await _gateway(disc, store)
        assert await svc.events.flush(15)
        got = [(await sub.next())["params"]["aor"] for _ in range(50)]
        assert got == [f"user{n}@example.com" for n in range(50)]
        assert svc.events.stats.delivered == 50 and svc.events.stats.dropped == 0
        assert sub.queue.empty()
    finally:
        sub.close()
        await svc.stop()
        if gw2 is not None:
            await gw2.stop()
        await registry.stop()


async def test_ingest_drops_duplicates_and_refuses_bad_input(tmp_path: Path) -> None:
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw = await _gateway(disc, tmp_path / "subs.sqlite")
    sub = await UdpSubscriber.open()
    public = JsonRpcClient(f"{gw.base_url}/mi")
    internal = JsonRpcClient(gw.mi_url)
    try:
        await public.call("event_subscribe", [EVENT, sub.socket, 60])
        wire = {"id": "ev-1", "event": EVENT, "time": 1.0, "service": "registrar",
                "node": "reg-1", "params": {"aor": "dup@example.com"}}
        for _ in range(2):  # an at-least-once resend
            assert await internal.call(INGEST_METHOD, {"events": [wire]}) == {
                "accepted": 1, "refused": []}
        wire2 = dict(wire, id="ev-2", params={"aor": "next@example.com"})
        await internal.call(INGEST_METHOD, {"events": [wire2]})
        assert (await sub.next())["params"]["aor"] == "dup@example.com"
        assert (await sub.next())["params"]["aor"] == "next@example.com"
        assert sub.queue.empty()
        with pytest.raises(RpcError) as err:
            await internal.call(INGEST_METHOD, {"events": "nope"})
        assert err.value.code == 400 and "events must be an array" in str(err.value.data)
        # Bad events are refused one by one; the good ones in the same call go through.
        bad = [dict(wire, id="b1", event="E_NOPE"), dict(wire, id="b2", params={"aor": 7}),
               dict(wire, id="b3", time="noon"), "junk",
               dict(wire, id="ok", params={"aor": "good@example.com"})]
        answer = await internal.call(INGEST_METHOD, {"events": bad})
        assert answer["accepted"] == 1
        errors = {r["index"]: r["error"] for r in answer["refused"]}
        assert set(errors) == {0, 1, 2, 3}
        assert "unknown event" in errors[0] and "aor" in errors[1]
        assert "time must be a number" in errors[2] and "JSON object" in errors[3]
        assert (await sub.next())["params"]["aor"] == "good@example.com"
        # Internal: not offered on the public endpoint.
        with pytest.raises(RpcError) as err:
            await public.call(INGEST_METHOD, {"events": [wire]})
        assert err.value.code == -32601
    finally:
        await public.close()
        await internal.close()
        sub.close()
        await gw.stop()
        await registry.stop()


async def test_a_refused_event_does_not_wedge_the_buffer(tmp_path: Path) -> None:
    """A gateway refusing one event (its contracts differ) must not block the rest."""
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw = await _gateway(disc, tmp_path / "subs.sqlite")
    sub = await UdpSubscriber.open()
    # A process built with one more contract than the gateway knows.
    contracts = tmp_path / "contracts"
    contracts.mkdir()
    for path in default_contracts_dir().glob("E_*.json"):
        shutil.copy(path, contracts)
    schema = json.loads((contracts / f"{EVENT}.json").read_text())
    # A newer event has an id of its own (ids are unique in the contracts).
    taken = [json.loads(p.read_text())["x-sipmesh-id"] for p in contracts.glob("E_*.json")]
    schema["x-sipmesh-id"] = max(taken) + 1
    (contracts / "E_NEWER_THAN_GATEWAY.json").write_text(json.dumps(schema))
    bus = ForwardingEventBus(EventCatalog.load(contracts), discovery=open_registry(disc),
                             service="registrar", node="reg-1", strict=True)
    client = JsonRpcClient(f"{gw.base_url}/mi")
    try:
        await client.call("event_subscribe", [EVENT, sub.socket, 60])
        await bus.start()
        bus.publish("E_NEWER_THAN_GATEWAY", {"aor": "refused@example.com"})
        bus.publish(EVENT, {"aor": "after@example.com"})
        assert await bus.flush(10)
        assert (await sub.next())["params"]["aor"] == "after@example.com"
        assert sub.queue.empty()
        assert bus.rejected == 1 and bus.stats.dropped == 0
    finally:
        await client.close()
        sub.close()
        await bus.close()
        await bus.discovery.close()
        await gw.stop()
        await registry.stop()


async def test_a_stuck_subscriber_does_not_hold_the_senders_up(tmp_path: Path) -> None:
    """A subscriber that never answers costs its own delivery timeout per event, but the
    forwarders are answered at once and the other subscribers still get everything."""
    silent = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)  # accepts, mute
    stuck = f"rabbitmq:guest:guest@127.0.0.1:{silent.sockets[0].getsockname()[1]}/q"
    registry = RegistryServer()
    disc = DiscoveryConfig(url=await registry.start(), ttl=10)
    gw, _ = build_gateway(GatewayConfig(port=0), disc, EventsConfig(
        store=str(tmp_path / "s.sqlite"), subscriber_timeout=0.2))
    await gw.start()
    sub = await UdpSubscriber.open()
    svc = ServiceRuntime("registrar", discovery=disc, events=EventsConfig(strict=True))
    client = JsonRpcClient(f"{gw.base_url}/mi")
    try:
        await client.call("event_subscribe", [EVENT, stuck, 60])
        await client.call("event_subscribe", [EVENT, sub.socket, 60])
        await svc.start()
        started = asyncio.get_running_loop().time()
        for n in range(15):
            svc.events.publish(EVENT, {"aor": f"u{n}@example.com"})
        assert await svc.events.flush(10)
        handed_over = asyncio.get_running_loop().time() - started
        got = [(await sub.next())["params"]["aor"] for _ in range(15)]
        delivered = asyncio.get_running_loop().time() - started
        assert got == [f"u{n}@example.com" for n in range(15)]
        # 15 deliveries to the stuck socket take >= 15 x 0.2 s; the hand-over did not wait.
        assert delivered >= 2.5 and handed_over < 1.5, (handed_over, delivered)
        stats = await client.call("get_statistics", [["events:notify_failed"]])
        assert stats["events:notify_failed"] >= 14
    finally:
        await client.close()
        sub.close()
        await svc.stop()
        await gw.stop()
        await registry.stop()
        silent.close()
