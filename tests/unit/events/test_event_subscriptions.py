"""SubscriptionManager semantics (OpenSIPS event interface) and the MI commands' shapes.

Store: the SQLite file backend; clock: injected.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator

import contracts
from gateway.events.mi import event_subscribe, events_list, mi_commands, subscribers_list
from gateway.events.sockets import SocketSyntaxError
from gateway.events.store import SQLiteSubscriptionStore
from gateway.events.subscriptions import SubscriptionManager, UnknownEventError
from shared.events.schema import EventCatalog
from shared.rpc.jsonrpc import MiDispatcher, MiError

CATALOG = EventCatalog.load()
MI_DIR = Path(contracts.__file__).resolve().parent / "mi"


class Clock:
    def __init__(self, t: float = 1_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def manager(tmp_path: Path, clock: Clock) -> AsyncIterator[SubscriptionManager]:
    m = SubscriptionManager(CATALOG, SQLiteSubscriptionStore(tmp_path / "s.db"), now=clock)
    await m.start()
    yield m
    await m.close()


def udp_receiver() -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    s.setblocking(False)
    return s


def udp_name(s: socket.socket) -> str:
    return f"udp:127.0.0.1:{s.getsockname()[1]}"


def mi_result_ok(command: str, result: Any) -> None:
    schema = json.loads((MI_DIR / f"{command}.json").read_text())
    Draft202012Validator(schema["result"]).validate(result)


async def test_subscribe_default_expire_is_an_hour(manager: SubscriptionManager) -> None:
    assert await manager.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:9000") is True
    [sub] = manager.subscribers("E_UL_AOR_INSERT")
    assert sub.remaining(manager.now()) == 3600


async def test_subscribing_again_refreshes_instead_of_duplicating(
    manager: SubscriptionManager, clock: Clock
) -> None:
    await manager.subscribe("E_UL_AOR_INSERT", "udp:127.0.0.1:9000", 60)
    clock.t += 50
    await manager.subscribe("E_UL_AOR_INSERT", "UDP:127.0.0.1:9000", 60)
    subs = manager.subscribers("E_UL_AOR_INSERT")
    assert len(subs) == 1
    assert subs[0].remaining(clock.t) == 60


async def test_expire_zero_unsubscribes(manager: SubscriptionManager) -> None:
    await manager.subscribe("E_ACC_CDR", "tcp:127.0.0.1:9000")
    assert await manager.subscribe("E_ACC_CDR", "tcp:127.0.0.1:9000", 0) is False
    assert manager.subscribers("E_ACC_CDR") == []
    assert await manager.store.load() == []


async def test_subscribers_expire_on_time(manager: SubscriptionManager, clock: Clock) -> None:
    expired, alive = udp_receiver(), udp_receiver()
    try:
        await manager.subscribe("E_UL_AOR_INSERT", udp_name(expired), 10)
        await manager.subscribe("E_UL_AOR_INSERT", udp_name(alive), 100)
        clock.t += 10
        assert [str(s.socket) for s in manager.subscribers()] == [udp_name(alive)]
        assert await manager.dispatch("E_UL_AOR_INSERT", {"aor": "a@b"}) == 1
        alive.settimeout(5)
        assert json.loads(alive.recv(65535))["params"] == {"aor": "a@b"}
        # loopback datagrams are queued at sendto time: had it been sent, it would be there
        with pytest.raises(BlockingIOError):
            expired.recv(65535)
        assert await manager.purge_expired() == 1
        assert [r.socket for r in await manager.store.load()] == [udp_name(alive)]
    finally:
        expired.close()
        alive.close()


async def test_subscriptions_survive_a_restart_and_expired_ones_do_not(
    tmp_path: Path, clock: Clock
) -> None:
    first = SubscriptionManager(CATALOG, SQLiteSubscriptionStore(tmp_path / "g.db"), now=clock)
    await first.start()
    await first.subscribe("E_DLG_STATE_CHANGED", "jsonrpc:127.0.0.1:7000/dlg", 30)
    await first.subscribe("E_UL_AOR_DELETE", "udp:127.0.0.1:7001", 3000)
    await first.close()
    clock.t += 60
    second = SubscriptionManager(CATALOG, SQLiteSubscriptionStore(tmp_path / "g.db"), now=clock)
    await second.start()
    try:
        subs = second.subscribers()
        assert [(s.event, str(s.socket)) for s in subs] == [
            ("E_UL_AOR_DELETE", "udp:127.0.0.1:7001")]
        assert subs[0].remaining(clock.t) == 2940
        assert [r.event for r in await second.store.load()] == ["E_UL_AOR_DELETE"]
    finally:
        await second.close()


async def test_bad_input_is_refused_clearly(manager: SubscriptionManager) -> None:
    with pytest.raises(UnknownEventError, match="E_NOPE"):
        await manager.subscribe("E_NOPE", "udp:127.0.0.1:1")
    with pytest.raises(SocketSyntaxError, match="unknown socket type"):
        await manager.subscribe("E_ACC_CDR", "http://x")
    with pytest.raises(ValueError, match="non-negative"):
        await manager.subscribe("E_ACC_CDR", "udp:127.0.0.1:1", -5)


async def test_mi_event_subscribe_returns_ok_and_accepts_text_expire(
    manager: SubscriptionManager,
) -> None:
    assert await event_subscribe(manager, "E_ACC_CDR", "udp:127.0.0.1:9100", "120") == "OK"
    mi_result_ok("event_subscribe", "OK")
    assert manager.subscribers("E_ACC_CDR")[0].remaining(manager.now()) == 120
    assert await event_subscribe(manager, "E_ACC_CDR", "udp:127.0.0.1:9100", 0) == "OK"
    assert manager.subscribers("E_ACC_CDR") == []


@pytest.mark.parametrize(
    ("args", "code", "text"),
    [
        (("E_NOPE", "udp:127.0.0.1:1"), 404, "E_NOPE"),
        (("E_ACC_CDR", "bogus"), 400, "unknown socket type"),
        (("E_ACC_CDR", "udp:127.0.0.1:1", "-1"), 400, "expire"),
        (("E_ACC_CDR", "udp:127.0.0.1:1", True), 400, "expire"),
        (("", "udp:127.0.0.1:1"), 400, "event"),
    ],
)
async def test_mi_event_subscribe_errors(
    manager: SubscriptionManager, args: tuple[Any, ...], code: int, text: str
) -> None:
    with pytest.raises(MiError) as info:
        await event_subscribe(manager, *args)
    assert info.value.code == code
    assert text in f"{info.value.message} {info.value.data}"


async def test_mi_events_list_shape(manager: SubscriptionManager) -> None:
    result = await events_list(manager)
    mi_result_ok("events_list", result)
    names = [e["name"] for e in result["Events"]]
    assert "E_UL_CONTACT_INSERT" in names and "E_ACC_CDR" in names
    assert [e["id"] for e in result["Events"]] == list(range(len(names)))


async def test_mi_subscribers_list_shapes(manager: SubscriptionManager, clock: Clock) -> None:
    await manager.subscribe("E_ACC_CDR", "udp:127.0.0.1:9100", 100)
    await manager.subscribe("E_ACC_CDR", "rabbitmq:bill:pw@127.0.0.1/cdrs?acc", 200)
    clock.t += 1
    everything = await subscribers_list(manager)
    mi_result_ok("subscribers_list", everything)
    cdr = next(e for e in everything["Events"] if e["name"] == "E_ACC_CDR")
    assert cdr["Subscribers"] == [
        {"socket": "udp:127.0.0.1:9100", "expire": 99},
        {"socket": "rabbitmq:bill@127.0.0.1:5672/cdrs?acc", "expire": 199},
    ]
    one_event = await subscribers_list(manager, "E_ACC_CDR")
    mi_result_ok("subscribers_list", one_event)
    assert one_event["name"] == "E_ACC_CDR" and len(one_event["Subscribers"]) == 2
    one = await subscribers_list(manager, "E_ACC_CDR", "udp:127.0.0.1:9100")
    mi_result_ok("subscribers_list", one)
    assert one == {"socket": "udp:127.0.0.1:9100", "expire": 99}
    with pytest.raises(MiError) as info:
        await subscribers_list(manager, "E_ACC_CDR", "udp:127.0.0.1:1")
    assert info.value.code == 404


async def test_mi_commands_work_through_the_gateway_dispatcher(
    manager: SubscriptionManager,
) -> None:
    dispatcher = MiDispatcher(mi_commands(manager))
    positional = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "event_subscribe",
                             "params": ["E_UL_AOR_INSERT", "udp:127.0.0.1:9200", 30]})
    assert json.loads(await dispatcher.dispatch(positional))["result"] == "OK"
    named = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "subscribers_list",
                        "params": {"event": "E_UL_AOR_INSERT"}})
    reply = json.loads(await dispatcher.dispatch(named))["result"]
    assert reply["Subscribers"] == [{"socket": "udp:127.0.0.1:9200", "expire": 30}]
    bad = json.dumps({"jsonrpc": "2.0", "id": 3, "method": "event_subscribe",
                      "params": {"event": "E_UL_AOR_INSERT", "socket": "nope:1"}})
    error = json.loads(await dispatcher.dispatch(bad))["error"]
    assert error["code"] == 400 and "unknown socket type" in error["data"]
