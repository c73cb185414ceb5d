"""The Event Socket contract: what the bridge relies on from a FreeSWITCH server.

Runs against the in-repo fake (services/freeswitch/testing/fake_freeswitch.py) always, and
against a real FreeSWITCH when `SIPMESH_TEST_FREESWITCH_URL` names one
(`fs://:ClueCon@10.0.0.5:8021`; `SIPMESH_TEST_FREESWITCH_HEARTBEAT` = its
`event-heartbeat-interval`, default 20 s).  FreeSWITCH cannot be installed on this
machine; the same assertions hold the fake to the real server's behaviour.  greenswitch,
an independent ESL client, cross-checks the framing (byte-counted bodies, plain events).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from services.freeswitch.boxes import BoxSpec, parse_fs_url
from services.freeswitch.client import ClientConfig, EslClient
from services.freeswitch.esl import Event
from services.freeswitch.testing.fake_freeswitch import FakeFreeswitch, Load

REAL = os.environ.get("SIPMESH_TEST_FREESWITCH_URL", "")
REAL_HEARTBEAT = float(os.environ.get("SIPMESH_TEST_FREESWITCH_HEARTBEAT", "20"))
PROBE = Path(__file__).with_name("esl_greenswitch_probe.py")


@dataclass
class Server:
    spec: BoxSpec
    heartbeat: float  # its event-heartbeat-interval (s)


@pytest.fixture(params=["fake", "real"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    if request.param == "real":
        if not REAL:
            pytest.skip("SIPMESH_TEST_FREESWITCH_URL is not set (no real FreeSWITCH here)")
        yield Server(parse_fs_url(REAL), REAL_HEARTBEAT)
        return
    fake = await FakeFreeswitch(heartbeat_interval=0.3, load=Load(3, 200, 87.5)).start()
    try:
        yield Server(parse_fs_url(fake.url), 0.3)
    finally:
        await fake.stop()


async def read_frame(reader: asyncio.StreamReader) -> tuple[dict[str, str], bytes]:
    head = await reader.readuntil(b"\n\n")
    headers = dict(line.split(": ", 1) for line in head.decode().strip().split("\n"))
    body = await reader.readexactly(int(headers.get("Content-Length", "0")))
    return headers, body


async def test_auth_request_then_refusal_and_disconnect_notice(server: Server) -> None:
    reader, writer = await asyncio.open_connection(server.spec.host, server.spec.port)
    try:
        headers, _ = await read_frame(reader)
        assert headers == {"Content-Type": "auth/request"}
        writer.write(b"auth not-the-password-" + uuid.uuid4().hex.encode() + b"\n\n")
        headers, _ = await read_frame(reader)
        assert headers["Content-Type"] == "command/reply"
        assert headers["Reply-Text"] == "-ERR invalid"
        headers, body = await read_frame(reader)
        assert headers["Content-Type"] == "text/disconnect-notice"
        assert b"Disconnected" in body
        assert await asyncio.wait_for(reader.read(), 5) == b""  # then it closes
    finally:
        writer.close()


@pytest.fixture
async def client(server: Server) -> AsyncIterator[tuple[EslClient, list[Event]]]:
    seen: list[Event] = []
    c = EslClient(server.spec, ["HEARTBEAT", "BACKGROUND_JOB"],
                  ClientConfig(heartbeat_timeout=3 * server.heartbeat + 1),
                  on_event=lambda _, ev: seen.append(ev))
    c.start()
    async with asyncio.timeout(10):
        while not c.up:
            await asyncio.sleep(0.01)  # polling the link state, bounded
    yield c, seen
    await c.stop()


async def test_api_status_show_calls_and_errors(client: tuple[EslClient, list[Event]]) -> None:
    c, _ = client
    status = (await c.api("status")).body
    assert status.startswith("UP ") and "session(s)" in status and "is ready" in status
    calls = (await c.api("show calls")).body
    assert calls.rstrip().endswith("total.")
    kill = await c.api(f"uuid_kill {uuid.uuid4()}")
    assert not kill.ok and kill.body.startswith("-ERR")
    unknown = await c.api("no_such_command_here")
    assert not unknown.ok and "Command not found" in unknown.body
    echo = await c.api("echo h\u00e9llo \u260e")
    assert echo.body == "h\u00e9llo \u260e"


async def test_subscription_replies(client: tuple[EslClient, list[Event]]) -> None:
    c, _ = client
    assert (await c.send_command("event json CHANNEL_CREATE")).text == \
        "+OK event listener enabled json"
    assert (await c.send_command("nixevent CHANNEL_CREATE")).text == "+OK events nixed"


async def test_bgapi_job_uuid_and_background_job(
        client: tuple[EslClient, list[Event]], server: Server) -> None:
    c, seen = client
    job, result = await c.bgapi("status")
    body = await asyncio.wait_for(result, 10)
    assert body.startswith("UP ")
    [event] = [e for e in seen if e.name == "BACKGROUND_JOB" and
               e.headers.get("Job-UUID") == job]
    assert event.headers["Job-Command"] == "status"


async def test_heartbeat_carries_the_load_figures(
        client: tuple[EslClient, list[Event]], server: Server) -> None:
    c, seen = client
    async with asyncio.timeout(2.5 * server.heartbeat + 2):
        while c.heartbeat is None:
            await asyncio.sleep(0.02)  # polling for the next HEARTBEAT, bounded
    [beat, *_] = [e for e in seen if e.name == "HEARTBEAT"]
    assert int(beat.headers["Session-Count"]) >= 0
    assert int(beat.headers["Max-Sessions"]) > 0
    assert 0.0 <= float(beat.headers["Idle-CPU"]) <= 100.0
    assert beat.core_uuid and beat.sequence is not None
    assert c.heartbeat is not None and c.heartbeat.max_sessions == int(
        beat.headers["Max-Sessions"])


async def test_greenswitch_reads_the_same_server(server: Server) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PROBE), server.spec.host, str(server.spec.port),
        server.spec.password, str(2.5 * server.heartbeat + 2),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    seen = json.loads(out.decode().strip().splitlines()[-1])
    assert "timeout" not in seen, seen
    assert seen["status"].startswith("UP ")
    assert seen["echo"] == "h\u00e9llo w\u00f6rld \u260e"  # a byte-counted UTF-8 body
    assert seen["subscribe"] == "+OK event listener enabled plain"
    assert seen["bgapi_reply"] == f"+OK Job-UUID: {seen['bgapi_job_uuid']}"
    assert seen["job"]["Job-UUID"] == seen["bgapi_job_uuid"]
    assert seen["job"]["Event-Name"] == "BACKGROUND_JOB"
    assert int(seen["heartbeat"]["Max-Sessions"]) > 0
    assert float(seen["heartbeat"]["Idle-CPU"]) >= 0
