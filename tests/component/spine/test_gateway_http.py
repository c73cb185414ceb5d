"""The gateway's HTTP edge as a client's bytes reach it, over a raw TCP socket.

* a JSON-RPC request whose body arrives in two TCP segments is answered once it is whole
  (it used to be parsed from the first segment: -32700);
* a 50 MB chunked body gets 413 once the 1 MB limit is passed, long before the client has
  sent it all (nothing buffers the rest);
* a bearer token with non-ASCII characters is a 401, never a 500 and a traceback;
* off loopback, ``/metrics`` needs the token and ``/health`` without it says only its
  status, unless ``[runtime] metrics_public`` opens both (an explicit choice).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator

import pytest

from gateway.app import build_gateway
from gateway.config import GatewayConfig
from shared.discovery import DiscoveryConfig
from shared.discovery.embedded import RegistryServer
from shared.events.config import EventsConfig
from shared.service import RuntimeConfig, ServiceRuntime

TOKEN = "s3cret-tökén"  # non-ASCII on purpose: compared as UTF-8 bytes


@contextlib.asynccontextmanager
async def gateway(host: str = "127.0.0.1", token: str = "") -> AsyncIterator[ServiceRuntime]:
    server = RegistryServer()
    url = await server.start()
    runtime, _ = build_gateway(GatewayConfig(host=host, port=0, token=token),
                               DiscoveryConfig(url=url), EventsConfig(store=":memory:"))
    await runtime.start()
    try:
        yield runtime
    finally:
        await runtime.stop()
        await server.stop()


async def exchange(port: int, *parts: bytes) -> tuple[int, dict[str, str], bytes]:
    """Sends ``parts`` (each its own write and drain), reads one HTTP/1.1 response."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for part in parts:
            writer.write(part)
            await writer.drain()
        return await read_response(reader)
    finally:
        writer.close()


async def read_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip()
               for k, _, v in (ln.partition(":") for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", 0))), 10)
    return status, headers, body


def post_head(length: int, *, token: bytes | None = None, path: str = "/mi") -> bytes:
    auth = b"Authorization: Bearer " + token + b"\r\n" if token is not None else b""
    return (f"POST {path} HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
            f"Content-Length: {length}\r\n").encode() + auth + b"\r\n"


async def test_request_body_in_two_segments_is_answered_whole() -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 7, "method": "version"}).encode()
    async with gateway() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(post_head(len(body)) + body[:10])
            await writer.drain()
            # Half a body must not be answered (it was: -32700 Parse error).
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(reader.read(1), 0.5)
            writer.write(body[10:])
            await writer.drain()
            status, _, answer = await read_response(reader)
        finally:
            writer.close()
    assert status == 200
    reply = json.loads(answer)
    assert reply["id"] == 7 and reply["result"]["Server"].startswith("SipMesh"), reply


async def test_huge_chunked_body_is_refused_early_with_413() -> None:
    total = 50 * 1024 * 1024
    chunk = b"[" + b"1," * 32767 + b"1]"  # 64 KiB of JSON-looking bytes
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    async with gateway() as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"POST /mi HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        answer = asyncio.ensure_future(read_response(reader))
        sent = 0
        try:
            while sent < total and not answer.done():
                writer.write(framed)
                sent += len(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the server may close its side after answering
        status, _, body = await asyncio.wait_for(answer, 10)
        writer.close()
    assert status == 413
    assert json.loads(body)["error"]["message"] == "Request too large"
    # Answered once the limit (1 MB) was passed, not after buffering the 50 MB.
    assert sent < total // 5, f"413 came only after {sent} bytes"


@pytest.mark.parametrize("sent", [
    "Bearer wröng".encode(),     # UTF-8, not the token
    b"Bearer \xe9\xff\x80",      # not UTF-8 at all
    "Bearer s3cret-tökén".encode("latin-1"),  # the right characters, the wrong bytes
])
async def test_non_ascii_bearer_token_is_401(sent: bytes) -> None:
    body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "version"}).encode()
    async with gateway(token=TOKEN) as gw:
        status, headers, answer = await exchange(gw.port, post_head(len(body))[:-2]
                                                 + b"Authorization: " + sent + b"\r\n\r\n"
                                                 + body)
        good = await exchange(gw.port, post_head(len(body), token=TOKEN.encode()) + body)
    assert status == 401, answer
    assert headers["www-authenticate"].startswith("Bearer")
    assert json.loads(answer)["error"]["message"] == "Unauthorized"
    assert good[0] == 200 and "Server" in json.loads(good[2])["result"]


async def get(port: int, path: str, token: str | None = None) -> tuple[int, bytes]:
    auth = f"Authorization: Bearer {token}\r\n".encode() if token else b""
    status, _, body = await exchange(
        port, f"GET {path} HTTP/1.1\r\nHost: gw\r\n".encode() + auth + b"\r\n")
    return status, body


async def test_metrics_and_health_need_the_token_off_loopback() -> None:
    async with gateway(host="0.0.0.0", token=TOKEN) as gw:
        assert (await get(gw.port, "/metrics"))[0] == 401
        status, metrics = await get(gw.port, "/metrics", TOKEN)
        assert status == 200 and b"sipmesh_" in metrics
        status, health = await get(gw.port, "/health")
        assert status == 200 and json.loads(health) == {"status": "passing"}
        status, health = await get(gw.port, "/health", TOKEN)
        assert json.loads(health)["service"] == "gateway"


async def test_metrics_public_opens_them_and_loopback_needs_no_token() -> None:
    server = RegistryServer()
    url = await server.start()
    public = ServiceRuntime("probe", config=RuntimeConfig(
        host="0.0.0.0", token=TOKEN, metrics_public=True), discovery=DiscoveryConfig(url=url))
    await public.start()
    try:
        assert (await get(public.port, "/metrics"))[0] == 200
        assert json.loads((await get(public.port, "/health"))[1])["service"] == "probe"
    finally:
        await public.stop()
        await server.stop()
    async with gateway(token=TOKEN) as gw:  # loopback: open, as OpenSIPS's mi_http
        assert (await get(gw.port, "/metrics"))[0] == 200


def test_metrics_public_is_read_from_the_runtime_section(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SIPMESH_RUNTIME_METRICS_PUBLIC", "true")
    rt = ServiceRuntime("probe", config=RuntimeConfig(host="0.0.0.0", token=TOKEN),
                        events=EventsConfig())
    assert rt.metrics_public is True
    monkeypatch.delenv("SIPMESH_RUNTIME_METRICS_PUBLIC")
    rt = ServiceRuntime("probe", config=RuntimeConfig(host="0.0.0.0", token=TOKEN),
                        events=EventsConfig())
    assert rt.metrics_public is False and not rt.observability_open
