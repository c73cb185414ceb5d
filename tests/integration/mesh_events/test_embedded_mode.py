"""Issue 5 end to end on a real ``sipmesh up`` in the embedded default (no RabbitMQ).

The edge process raises E_CORE_THRESHOLD (see meshkit); its runtime forwards it to the
gateway found in discovery; the gateway delivers it to subscribers that subscribed through
its HTTP MI endpoint over every socket syntax, to the ``opensips`` package's event
handler, and to ``sipmesh events``. Subscriptions expire on time and survive a restart
of the gateway process. Load statistics come back mesh-wide with OpenSIPS names.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import aio_pika
import pytest
from opensips.event import OpenSIPSEventHandler
from opensips.event.stream import Stream
from opensips.mi import OpenSIPSMI

from tests.integration.mesh_events.meshkit import (
    TcpSubscriber,
    UdpSubscriber,
    check_threshold_event,
    line,
    mi,
    raise_on_edge,
    start_mesh,
)
from tests.integration.spine.meshproc import ROOT, MeshProcess
from tests.support import opensips_cli
from tests.support.waiting import eventually

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
EVENT = "E_CORE_THRESHOLD"


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[MeshProcess, str]]:
    m, edge_pid = start_mesh(tmp_path_factory.mktemp("mesh_events"))
    yield m, edge_pid
    assert m.stop() == 0


async def test_udp_tcp_and_jsonrpc_subscribers_get_the_edge_event(
    mesh: tuple[MeshProcess, str],
) -> None:
    m, edge_pid = mesh
    udp = await UdpSubscriber.open()
    tcp = await TcpSubscriber("tcp").open()
    rpc = await TcpSubscriber("jsonrpc", "/core_slow").open()
    subs: list[UdpSubscriber | TcpSubscriber] = [udp, tcp, rpc]
    names = {s.socket for s in subs}
    try:
        for sub in subs:
            assert await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 60]) == "OK"
        listed = await mi(m.gateway_url, "subscribers_list", {"event": EVENT})
        assert {s["socket"] for s in listed["Subscribers"]} >= {s.socket for s in subs}
        await raise_on_edge(m.gateway_url)
        got_udp, got_tcp, got_rpc = [await sub.next() for sub in subs]
        assert got_udp["jsonrpc"] == "2.0" and got_udp["method"] == EVENT
        assert "id" not in got_udp  # a notification, as event_datagram sends
        assert got_tcp["method"] == EVENT
        # event_jsonrpc: the socket's method, id null.
        assert got_rpc["method"] == "core_slow" and got_rpc["id"] is None
        for got in (got_udp, got_tcp, got_rpc):
            check_threshold_event(got["params"], edge_pid)
    finally:
        for sub in subs:
            await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 0])
            sub.close()
    gone = await mi(m.gateway_url, "subscribers_list", {"event": EVENT})
    assert not {s["socket"] for s in gone["Subscribers"]} & names


async def test_rabbitmq_socket_subscriber_gets_the_edge_event(
    mesh: tuple[MeshProcess, str],
) -> None:
    m, edge_pid = mesh
    conn = await aio_pika.connect(AMQP)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(exclusive=True, auto_delete=True)
        # Default exchange: the routing key is the queue's name (event_rabbitmq).
        sock = f"rabbitmq:guest:guest@127.0.0.1:5672/{queue.name}"
        assert await mi(m.gateway_url, "event_subscribe", [EVENT, sock, "60"]) == "OK"
        listed = await mi(m.gateway_url, "subscribers_list", [EVENT, sock])
        assert listed["socket"] == f"rabbitmq:guest@127.0.0.1:5672/{queue.name}"  # no password
        await raise_on_edge(m.gateway_url)
        async with asyncio.timeout(15), queue.iterator() as messages:
            async for message in messages:
                await message.ack()
                body = message.body.decode()
                break
        await mi(m.gateway_url, "event_subscribe", [EVENT, sock, 0])
    finally:
        await conn.close()
    # OpenSIPS 2.4 event_rabbitmq text: the name, then name::value lines.
    lines = body.split("\n")
    assert lines[0] == EVENT
    fields = dict(line.split("::", 1) for line in lines[1:])
    assert fields["source"] == '"mi command"'
    assert fields["extra"].startswith('"get_statistics on edge-')
    assert fields["extra"].endswith(f'-{edge_pid}"')
    assert int(fields["time"]) > 1



def _settle(future: asyncio.Future[Any], value: Any) -> None:
    """Sets ``future``'s result unless it is already done (from the handler's thread)."""
    if not future.done():
        future.set_result(value)

class _TcpStream(Stream):  # type: ignore[misc]  # opensips has no types
    # opensips 0.1.11's Stream names its TCP socket "udp:ip:port" (a bug upstream).
    def create(self) -> str:
        super().create()
        self.sock_name = f"tcp:{self.ip}:{self.port}"
        return str(self.sock_name)


class _StreamHandler(OpenSIPSEventHandler):  # type: ignore[misc]
    def __new_socket__(self) -> Stream:
        return _TcpStream(**self.kwargs)


@pytest.mark.parametrize("kind", ["datagram", "stream"])
async def test_opensips_package_event_handler_through_the_gateway(
    mesh: tuple[MeshProcess, str], kind: str,
) -> None:
    m, edge_pid = mesh
    loop = asyncio.get_running_loop()
    received: asyncio.Future[Any] = loop.create_future()

    def callback(msg: Any) -> None:  # the handler's reader thread
        loop.call_soon_threadsafe(_settle, received, msg)

    # The real client, over HTTP to the running gateway.
    handler_cls = _StreamHandler if kind == "stream" else OpenSIPSEventHandler
    handler = handler_cls(mi=OpenSIPSMI("http", url=m.gateway_url), _type=kind,
                          ip="127.0.0.1", port=0)
    event = await asyncio.to_thread(handler.subscribe, EVENT, callback, 120)
    try:
        [sub] = [s for s in (await mi(m.gateway_url, "subscribers_list", [EVENT]))[
            "Subscribers"] if s["socket"] == event.socket.sock_name]
        assert 0 < sub["expire"] <= 120
        await raise_on_edge(m.gateway_url)
        async with asyncio.timeout(15):
            msg = await received
    finally:
        await asyncio.to_thread(handler.unsubscribe, EVENT)
    assert msg["method"] == EVENT
    check_threshold_event(dict(msg["params"]), edge_pid)
    after = await mi(m.gateway_url, "subscribers_list", [EVENT])
    assert event.socket.sock_name not in {s["socket"] for s in after["Subscribers"]}


async def test_subscription_expires_on_time(mesh: tuple[MeshProcess, str]) -> None:
    m, _ = mesh
    short, long = await UdpSubscriber.open(), await UdpSubscriber.open()
    try:
        await mi(m.gateway_url, "event_subscribe", [EVENT, short.socket, 1])
        await mi(m.gateway_url, "event_subscribe", [EVENT, long.socket, 60])
        started = asyncio.get_running_loop().time()

        async def short_gone() -> bool:  # expiry is absolute time: gone after 1 s
            listed = await mi(m.gateway_url, "subscribers_list", [EVENT])
            return short.socket not in {s["socket"] for s in listed["Subscribers"]}

        await eventually(short_gone, 5, "the 1 s subscription to expire", interval=0.1)
        assert asyncio.get_running_loop().time() - started >= 0.9
        await raise_on_edge(m.gateway_url)
        assert (await long.next())["method"] == EVENT
        # Both would have been delivered by the same dispatch: the expired one got nothing.
        assert short.queue.empty()
    finally:
        await mi(m.gateway_url, "event_subscribe", [EVENT, long.socket, 0])
        short.close()
        long.close()


async def test_bad_subscriptions_get_clear_errors(mesh: tuple[MeshProcess, str]) -> None:
    m, _ = mesh
    cases = [
        ([EVENT, "carrier-pigeon:1.2.3.4"], 400, "unknown socket type"),
        ([EVENT, "udp:127.0.0.1"], 400, "expected udp:host:port"),
        (["E_NO_SUCH_EVENT", "udp:127.0.0.1:9"], 404, "E_NO_SUCH_EVENT"),
        ([EVENT, "udp:127.0.0.1:9", "soon"], 400, "non-negative"),
    ]
    for params, code, text in cases:
        run = m.cli("rpc", "--url", m.gateway_url, "event_subscribe", *params)
        assert run.returncode == 1, run.stdout
        assert f"error {code}" in run.stderr and text in run.stderr, run.stderr
        assert "Traceback" not in run.stderr


async def test_sipmesh_events_streams_through_the_gateway(
    mesh: tuple[MeshProcess, str],
) -> None:
    m, edge_pid = mesh
    env = dict(m.env, SIPMESH_DISCOVERY_URL=m.registry_url)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "sipmesh.cli.main", "events", EVENT, "--url", m.gateway_url,
        "--count", "1", cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    try:
        async def subscribed() -> bool:  # the command subscribes a tcp: socket of its own
            listed = await mi(m.gateway_url, "subscribers_list", [EVENT])
            return any(s["socket"].startswith("tcp:") for s in listed["Subscribers"])

        await eventually(subscribed, 20, "sipmesh events to subscribe", interval=0.1)
        async with asyncio.timeout(20):
            await raise_on_edge(m.gateway_url)
            out, err = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    text = out.decode()
    assert f"{EVENT}  (via gateway)" in text
    assert 'source : "mi command"' in text
    assert f'-{edge_pid}"' in text
    # It unsubscribed on its way out.
    listed = await mi(m.gateway_url, "subscribers_list", [EVENT])
    assert not any(s["socket"].startswith("tcp:") for s in listed["Subscribers"])


async def test_load_statistics_mesh_wide(mesh: tuple[MeshProcess, str]) -> None:
    m, _ = mesh
    got = await mi(m.gateway_url, "get_statistics", [["load:"]])
    ps = (await mi(m.gateway_url, "ps"))["Processes"]
    expected = {f"load:{k}{s}" for k in ("load", "load1m", "load10m") for s in ("", "-all")}
    expected |= {f"load:{k}-proc-{p['ID']}" for k in ("load", "load1m", "load10m")
                 for p in ps if not p["Type"].startswith("supervisor")}
    assert set(got) == expected
    assert all(isinstance(v, int) and 0 <= v <= 100 for v in got.values())
    one = await mi(m.gateway_url, "get_statistics", {"statistics": ["load:load1m"]})
    assert set(one) == {"load:load1m"}
    bare = await mi(m.gateway_url, "get_statistics", [["load10m-all", "load"]])
    assert set(bare) == {"load:load10m-all", "load:load"}
    # Prometheus: every process exports its own share; the edge handles SIP.
    rows = await mi(m.gateway_url, "which")
    assert {"event_subscribe", "events_list", "subscribers_list"} <= set(rows)
    edge_metrics = _edge_metrics_url(m)
    text = urllib.request.urlopen(edge_metrics, timeout=10).read().decode()
    assert "sipmesh_load " in text and "sipmesh_load1m_all " in text
    assert "sipmesh_events_raised " in text


def _edge_metrics_url(m: MeshProcess) -> str:
    return line(m, r"^endpoint edge metrics (\S+)").group(1)


async def test_subscriptions_survive_a_gateway_restart(
    mesh: tuple[MeshProcess, str],
) -> None:
    m, edge_pid = mesh
    sub = await UdpSubscriber.open()
    try:
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 300])
        pid = _gateway_pid(m)
        os.kill(pid, signal.SIGKILL)  # no chance to save anything on the way out
        m.expect(rf"^exited gateway pid {pid} ")
        m.expect(r"^started gateway pid (\d+)")
        m.gateway_url = m.expect(r"^endpoint gateway mi (\S+)").group(1)
        listed = await mi(m.gateway_url, "subscribers_list", [EVENT, sub.socket])
        assert 250 < listed["expire"] <= 300
        await raise_on_edge(m.gateway_url)
        got = await sub.next(20)  # the edge's forwarder found the new gateway
        check_threshold_event(got["params"], edge_pid)
    finally:
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 0])
        sub.close()


def _gateway_pid(m: MeshProcess) -> int:
    pids = [int(line.split()[3]) for line in m.seen if line.startswith("started gateway pid")]
    return pids[-1]


async def test_slow_sip_processing_raises_e_core_threshold(
    mesh: tuple[MeshProcess, str],
) -> None:
    """OpenSIPS exec_msg_threshold: the edge reports a SIP message that took longer than
    the threshold (1 us here: every message), with its start line."""
    m, _ = mesh
    edge = line(m, r"^endpoint edge sip sip:(127\.0\.0\.1):(\d+);transport=udp")
    sub = await UdpSubscriber.open()
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol, local_addr=("127.0.0.1", 0))
    try:
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 60])
        me = transport.get_extra_info("sockname")[1]
        ruri = f"sip:ping@{edge.group(1)}:{edge.group(2)}"
        transport.sendto((
            f"OPTIONS {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{me};branch=z9hG4bKthr1\r\n"
            "Max-Forwards: 70\r\nFrom: <sip:t@127.0.0.1>;tag=1\r\nTo: <sip:ping@127.0.0.1>\r\n"
            "Call-ID: threshold-1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode(),
            (edge.group(1), int(edge.group(2))))
        while True:  # MI-triggered events may come too; the SIP one must
            got = (await sub.next())["params"]
            if got["source"] == "msg processing":
                break
        assert got["extra"] == f"OPTIONS {ruri} SIP/2.0"
        assert got["time"] > 1
    finally:
        await mi(m.gateway_url, "event_subscribe", [EVENT, sub.socket, 0])
        sub.close()
        transport.close()


def test_opensips_cli_manages_subscriptions(mesh: tuple[MeshProcess, str]) -> None:
    m, _ = mesh

    def cli(*cmd: str) -> Any:
        run = opensips_cli.mi(m.gateway_url, *cmd)
        assert run.returncode == 0, run.stderr
        return json.loads(run.stdout)

    assert cli("event_subscribe", "E_DLG_STATE_CHANGED", "jsonrpc:127.0.0.1:9/dlg", "90") == "OK"
    one = cli("subscribers_list", "E_DLG_STATE_CHANGED", "jsonrpc:127.0.0.1:9/dlg")
    assert one["socket"] == "jsonrpc:127.0.0.1:9/dlg" and 0 < one["expire"] <= 90
    # Advertised: what the running gateway and edge raise; the dialog event is subscribed
    # to ahead of any dialog service, so it is listed with its subscriber only.
    advertised = {e["name"] for e in cli("events_list")["Events"]}
    assert "E_CORE_THRESHOLD" in advertised and "E_DLG_STATE_CHANGED" not in advertised
    assert "E_DLG_STATE_CHANGED" in {e["name"] for e in cli("subscribers_list")["Events"]}
    assert cli("event_subscribe", "E_DLG_STATE_CHANGED", "jsonrpc:127.0.0.1:9/dlg", "0") == "OK"
    assert cli("subscribers_list", "E_DLG_STATE_CHANGED")["Subscribers"] == []
