"""A real ``sipmesh up`` (gateway + edge, free ports) and subscriber sockets for the
mesh-wide event tests.

The event raised for real: every service's runtime times its MI requests against
``[events] exec_threshold`` and raises ``E_CORE_THRESHOLD`` (source ``mi command``) when
one took longer. The tests set the threshold to 1 us, so a ``get_statistics`` sent to the
gateway - which asks every instance - makes the *edge process* raise it, and the extra
field names the instance (``get_statistics on edge-<host>-<pid>``).
"""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from shared.rpc import JsonRpcClient
from tests.integration.spine.meshproc import MeshProcess

ROOT = Path(__file__).resolve().parents[3]
THRESHOLD_SCHEMA = json.loads((ROOT / "contracts/events/E_CORE_THRESHOLD.json").read_text())


def start_mesh(tmp: Path, threshold: str = "1", **env: str) -> tuple[MeshProcess, str]:
    """The mesh, once the edge is up; returns it and the edge's instance pid.
    ``threshold`` is ``[events] exec_threshold`` (us; "0" turns E_CORE_THRESHOLD off)."""
    from sipmesh.cli.mesh_cmd import _runnable

    if not _runnable("services.edge"):
        pytest.skip("services.edge is not present in this checkout")
    mesh = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway,edge",
                       SIPMESH_EDGE_LISTEN="udp:127.0.0.1:0",
                       SIPMESH_EVENTS_EXEC_THRESHOLD=threshold, **env)
    try:
        pid = line(mesh, r"^started edge pid (\d+)").group(1)
        line(mesh, r"^endpoint edge sip ")
    except BaseException:
        mesh.stop()  # never leave the children behind
        raise
    return mesh, pid


def line(mesh: MeshProcess, pattern: str, timeout: float = 20.0) -> re.Match[str]:
    """A stdout line matching ``pattern``: one already read, else the next one to come."""
    return mesh.line(pattern, timeout)


async def mi(url: str, method: str, params: Any = None) -> Any:
    client = JsonRpcClient(url, timeout=10.0)
    try:
        return await client.call(method, params)
    finally:
        await client.close()


async def raise_on_edge(gateway_url: str) -> None:
    """Makes the edge raise E_CORE_THRESHOLD (see the module docstring)."""
    await mi(gateway_url, "get_statistics", [["core:rcv_requests"]])


def check_threshold_event(params: Any, edge_pid: str) -> None:
    jsonschema.validate(params, THRESHOLD_SCHEMA)
    assert params["source"] == "mi command"
    assert params["extra"].startswith("get_statistics on edge-")
    assert params["extra"].endswith(f"-{edge_pid}")
    assert params["time"] > 1


class UdpSubscriber(asyncio.DatagramProtocol):
    """``udp:`` (event_datagram): one JSON-RPC notification per datagram."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    @classmethod
    async def open(cls) -> UdpSubscriber:
        loop = asyncio.get_running_loop()
        sub = cls()
        await loop.create_datagram_endpoint(lambda: sub, local_addr=("127.0.0.1", 0))
        return sub

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.queue.put_nowait(json.loads(data))

    @property
    def socket(self) -> str:
        assert self.transport is not None
        return f"udp:127.0.0.1:{self.transport.get_extra_info('sockname')[1]}"

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class TcpSubscriber:
    """``tcp:`` (event_stream) and ``jsonrpc:`` (event_jsonrpc): JSON text over TCP, one
    connection per event, read to EOF."""

    def __init__(self, scheme: str, suffix: str = "") -> None:
        self.scheme, self.suffix = scheme, suffix
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.server: asyncio.Server | None = None

    async def _on_conn(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read()
        writer.close()
        self.queue.put_nowait(json.loads(data))

    async def open(self) -> TcpSubscriber:
        self.server = await asyncio.start_server(self._on_conn, "127.0.0.1", 0)
        return self

    @property
    def socket(self) -> str:
        assert self.server is not None
        port = self.server.sockets[0].getsockname()[1]
        return f"{self.scheme}:127.0.0.1:{port}{self.suffix}"

    async def next(self, timeout: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            return await self.queue.get()

    def close(self) -> None:
        if self.server is not None:
            self.server.close()
