"""The edge's RegistrarClient against the real registrar servicer on a loopback port, with
an empty SQLite subscriber store: what the gRPC-path tests of this folder stand on."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.edge.registrar_client import RegistrarClient
from services.registrar.app import SERVICE, RegistrarServicer
from services.registrar.location import Location
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.rpc.grpc_helpers import start_grpc_server


@contextlib.asynccontextmanager
async def registrar_client(tmp_path: Path, **client: Any) -> AsyncIterator[RegistrarClient]:
    """A client (``client`` are RegistrarClient's keywords) of a registrar serving here."""
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    ul = UserLocation(Location(), store)
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
                RegistrarServicer(ul), s)],
        services=[SERVICE])
    registrar = RegistrarClient(addresses=[f"127.0.0.1:{server.port}"], **client)
    try:
        yield registrar
    finally:
        await registrar.close()
        await server.stop(0)
        await store.close()
