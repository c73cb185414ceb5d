"""The edge's dialog client against a real dialog servicer over gRPC on loopback: events
acknowledged once stored, buffered (bounded, counted) while the dialog service is away
and delivered when it is back, profile queries on the same stream."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from contracts.generated.sipmesh.dialog.v1 import dialog_pb2 as pb
from contracts.generated.sipmesh.dialog.v1 import dialog_pb2_grpc as pb_grpc
from services.dialog.app import DialogService, DialogServicer
from services.dialog.config import DialogConfig
from services.dialog.store import SQLiteCdrStore, SQLiteDialogStore
from services.edge.dialog_client import DialogClient, DialogUnavailable
from shared.rpc.grpc_helpers import GrpcServer, start_grpc_server
from tests.unit.dialog.events import create, reply, request


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        await asyncio.sleep(0.01)  # polling an observable condition with a deadline


class Service:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.svc: DialogService | None = None
        self.server: GrpcServer | None = None
        self.port = 0

    async def start(self, port: int = 0) -> None:
        store = SQLiteDialogStore(self.tmp / "dialogs.sqlite")
        cdrs = SQLiteCdrStore(self.tmp / "cdr.sqlite")
        await store.open()
        await cdrs.open()
        self.svc = DialogService(DialogConfig(), store=store, cdrs=cdrs)
        await self.svc.load()
        svc = self.svc
        self.server = await start_grpc_server(
            [lambda s: pb_grpc.add_DialogServicer_to_server(  # type: ignore[no-untyped-call]
                DialogServicer(svc), s)],
            port=port)
        self.port = self.server.port
        svc.start()

    async def stop(self) -> None:
        assert self.server is not None and self.svc is not None
        await self.server.stop(0)
        await self.svc.stop()
        assert self.svc.store is not None
        await self.svc.store.close()
        await self.svc.cdrs.close()


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[Service]:
    s = Service(tmp_path)
    await s.start()
    yield s
    if s.server is not None:
        await s.stop()


def event(**kind: Any) -> Any:
    return pb.DialogEvent(time_ms=int(time.time() * 1000), **kind)


async def test_events_are_applied_stored_and_acknowledged(service: Service,
                                                         tmp_path: Path) -> None:
    client = DialogClient(addresses=[f"127.0.0.1:{service.port}"])
    await client.start()
    try:
        client.emit(event(create=create(profiles=(("caller", "alice"),))))
        client.emit(event(reply=reply(200)))
        client.emit(event(request=request("ACK", cseq=1)))
        await until(lambda: client.acked == 3 and not client.buffered)
        assert service.svc is not None
        d = service.svc.table.find("c1", "ft")
        assert d is not None and int(d.state) == 4
        # Acknowledged means stored: a fresh process reads it back.
        back = SQLiteDialogStore(tmp_path / "dialogs.sqlite")
        await back.open()
        assert len(await back.load()) == 1
        await back.close()
        size = await client.query(pb.Query(size=pb.ProfileQuery(
            name="caller", value="alice", has_value=True)))
        assert size.size == 1
        taken = await client.query(pb.Query(reserve=pb.Reserve(
            callid="c2", from_tag="f", limit=1,
            profile=pb.Profile(name="caller", value="alice", has_value=True))))
        assert (taken.ok, taken.size) == (False, 1)
    finally:
        await client.close()


async def test_events_wait_while_the_service_is_away_and_overflow_is_counted(
        service: Service) -> None:
    client = DialogClient(addresses=[f"127.0.0.1:{service.port}"], buffer_size=5)
    await client.start()
    try:
        client.emit(event(create=create(callid="a")))
        await until(lambda: client.acked == 1)
        port = service.port
        await service.stop()
        with pytest.raises(DialogUnavailable):
            await client.query(pb.Query(size=pb.ProfileQuery(name="x")))
        for i in range(7):  # 5 fit, 2 are dropped and counted
            client.emit(event(create=create(callid=f"b{i}")))
        assert client.buffered == 5 and client.dropped == 2
        await service.start(port)  # back, same address
        await until(lambda: not client.buffered, 15)
        assert service.svc is not None
        assert {d.callid for d in service.svc.table} == {"a", "b0", "b1", "b2", "b3", "b4"}
        assert client.statistics()["events_dropped"] == 2
    finally:
        await client.close()


async def test_a_repeated_event_changes_nothing(service: Service) -> None:
    client = DialogClient(addresses=[f"127.0.0.1:{service.port}"])
    await client.start()
    try:
        for e in (event(create=create()), event(reply=reply(200)),
                  event(request=request("BYE")), event(request=request("BYE")),
                  event(create=create())):
            client.emit(e)
        await until(lambda: client.acked == 5)
        assert service.svc is not None
        await until(lambda: len(service.svc.table) == 0)  # CDR written, dialog gone
        rows = await service.svc.cdrs.export()
        assert len(rows) == 1 and rows[0]["end_reason"] == "caller-bye"
    finally:
        await client.close()


async def test_closing_hands_over_what_is_still_buffered(service: Service) -> None:
    """A stopping edge (drain, rolling restart) writes the events it still holds before its
    stream goes: the call's dialog reaches the service even when close() follows emit()."""
    client = DialogClient(addresses=[f"127.0.0.1:{service.port}"])
    await client.start()
    await until(lambda: client.connected)
    client.emit(event(create=create(callid="last")))
    client.emit(event(reply=reply(200, callid="last")))
    await client.close()
    assert not client.buffered
    assert service.svc is not None
    d = service.svc.table.find("last", "ft")
    assert d is not None and int(d.state) >= 3
