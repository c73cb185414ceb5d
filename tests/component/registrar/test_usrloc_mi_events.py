"""The registrar's MI commands and events, in process: real user location, real MI
dispatcher, real event bus (strict: a payload off its JSON Schema fails the test)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.registrar.location import Location, Origin
from services.registrar.mi import register_mi
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.discovery.memory import MemoryRegistry
from shared.events.bus import EmbeddedEventBus
from shared.events.schema import EventCatalog
from shared.service import ServiceRuntime
from shared.sip import parse_message
from tests.support.waiting import eventually

MI = Path(__file__).resolve().parents[3] / "contracts" / "mi"
T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def register(contact: str, cseq: int = 1, expires: int = 600) -> Any:
    return parse_message((
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        f"Call-ID: c1\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\nContact: {contact}\r\n"
        f"Expires: {expires}\r\nUser-Agent: test-phone\r\nContent-Length: 0\r\n\r\n").encode())


@pytest.fixture
async def setup(tmp_path: Path) -> Any:
    bus = EmbeddedEventBus(EventCatalog.load(), service="registrar", node="t", strict=True)
    seen: list[tuple[str, dict[str, Any]]] = []
    got = asyncio.Event()

    async def listen(event: Any) -> None:
        seen.append((event.name, dict(event.params)))
        got.set()

    bus.add_listener(listen, "#")
    await bus.start()
    runtime = ServiceRuntime("registrar", registry=MemoryRegistry())
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    clock = Clock()
    ul = UserLocation(Location(), store, events=bus, clock=clock)
    register_mi(runtime, ul)
    yield runtime, ul, seen, clock, bus
    await bus.close(1.0)
    await store.close()


async def call(runtime: ServiceRuntime, method: str, params: Any = None) -> dict[str, Any]:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    answer: dict[str, Any] = json.loads(await runtime.mi.dispatch(json.dumps(body)))
    if "result" in answer:
        schema = json.loads((MI / f"{method}.json").read_text())
        if params is not None:
            jsonschema.validate(params, schema["params"])
        jsonschema.validate(answer["result"], schema["result"])
    return answer


async def wait_for(seen: list[Any], count: int) -> None:
    # The bus delivers on its own task.
    await eventually(lambda: len(seen) >= count, 5, f"{count} events")


async def test_mi_answers_match_their_schemas_and_opensips_shapes(setup: Any) -> None:
    runtime, ul, _, _clock, _ = setup
    ul.save(register("<sip:alice@10.0.0.5:5060>"), Origin("203.0.113.9", 4000))
    dump = (await call(runtime, "ul_dump"))["result"]
    [domain] = dump["Domains"]
    assert domain["name"] == "location" and domain["hash_size"] == 512
    [aor] = domain["AORs"]
    [contact] = aor["Contacts"]
    assert aor["AOR"] == "alice@example.com"
    assert contact["Expires"] == 600 and contact["Received"] == "sip:203.0.113.9:4000"
    assert contact["User-agent"] == "test-phone" and contact["Q"] == ""
    brief = (await call(runtime, "ul_dump", ["brief"]))["result"]
    assert brief["Domains"][0]["AORs"] == [{"AOR": "alice@example.com"}]
    shown = (await call(runtime, "ul_show_contact",
                        {"table_name": "location", "aor": "alice@example.com"}))["result"]
    assert shown["Contacts"][0]["Contact"] == "sip:alice@10.0.0.5:5060"
    assert (await call(runtime, "ul_show_contact", ["location", "bob@example.com"])
            )["error"]["code"] == 404
    assert (await call(runtime, "ul_show_contact", ["nope", "alice@example.com"])
            )["error"]["message"] == "Table not found"
    assert (await call(runtime, "ul_rm", ["location", "alice"]))["error"]["code"] == 400
    assert (await call(runtime, "ul_add", ["location", "bob@example.com", "sip:bob@10.0.0.7",
                                           0, "0.5", 0, 0, 0, 4294967295]))["result"] == "OK"
    bob = (await call(runtime, "ul_show_contact", ["location", "bob@example.com"]))["result"]
    assert bob["Contacts"][0]["Expires"] == "permanent" and bob["Contacts"][0]["Q"] == "0.5"
    assert (await call(runtime, "ul_rm_contact", ["location", "bob@example.com",
                                                  "sip:nobody@x"]))["error"]["code"] == 404
    assert (await call(runtime, "ul_rm_contact", ["location", "bob@example.com",
                                                  "sip:bob@10.0.0.7"]))["result"] == "OK"
    assert (await call(runtime, "ul_rm", ["location", "alice@example.com"]))["result"] == "OK"
    assert (await call(runtime, "ul_dump"))["result"]["Domains"][0]["AORs"] == []
    assert (await call(runtime, "ul_flush"))["result"] == "OK"
    assert (await call(runtime, "ul_cluster_sync"))["error"]["code"] == 400  # not clustered
    assert (await call(runtime, "ul_sync", ["location"]))["error"]["code"] == 400


async def test_events_carry_opensips_parameters(setup: Any) -> None:
    _runtime, ul, seen, clock, _ = setup
    ul.save(register("<sip:alice@10.0.0.5:5060>"), Origin("10.0.0.5", 5060, socket="udp:x:1"))
    await wait_for(seen, 2)
    assert [n for n, _ in seen] == ["E_UL_AOR_INSERT", "E_UL_CONTACT_INSERT"]
    params = seen[1][1]
    assert params["aor"] == "alice@example.com" and params["uri"] == "sip:alice@10.0.0.5:5060"
    assert params["expires"] == int(T0) + 600 and params["qval"] == 10
    assert params["received"] == "" and params["cseq"] == 1 and params["latency"] == 0
    clock.now += 10
    ul.save(register("<sip:alice@10.0.0.5:5060>", cseq=2),
            Origin("10.0.0.5", 5060, socket="udp:x:1"))
    await wait_for(seen, 4)
    assert [n for n, _ in seen[2:]] == ["E_UL_CONTACT_UPDATE", "E_UL_CONTACT_REFRESH"]
    clock.now += 700
    assert ul.expire() == 1
    await wait_for(seen, 6)
    assert [n for n, _ in seen[4:]] == ["E_UL_CONTACT_DELETE", "E_UL_AOR_DELETE"]


class Wire:
    """Two nodes' replication joined in memory: what one broadcasts, the other applies."""

    def __init__(self) -> None:
        self.peer: UserLocation | None = None

    def broadcast(self, cap: str, payload: bytes) -> int:
        assert self.peer is not None
        self.peer.apply_update(1, payload)
        return 1


async def test_replication_records_carry_bindings_removals_and_latency(tmp_path: Path) -> None:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    wire_a, wire_b = Wire(), Wire()
    a = UserLocation(Location(), store, cluster=wire_a, clock=Clock())
    b = UserLocation(Location(), store, cluster=wire_b, clock=Clock())
    wire_a.peer, wire_b.peer = b, a
    a.save(register("<sip:alice@10.0.0.5:5060>"), Origin("203.0.113.9", 4000))
    [copy] = b.location.lookup("alice@example.com", "", T0)
    assert copy.received == "sip:203.0.113.9:4000" and copy.cseq == 1
    [mine] = a.location.lookup("alice@example.com", "", T0)
    a.set_latency(mine, 4321)
    assert copy.latency == 4321  # the other node can skip/order by it too
    assert b.remove_aor("alice@example.com")
    assert a.location.records == {}
    await store.close()
