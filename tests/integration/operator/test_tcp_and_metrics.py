"""``list_tcp_conns`` through opensips-cli names a phone's TCP connection to the edge, and
the edge's ``/metrics`` carries the SIP transaction time histogram after sipp calls
(issue 21, observability)."""

from __future__ import annotations

import re
import socket
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.ports import reserve_port

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorMesh]:
    tmp = tmp_path_factory.mktemp("tcp_metrics")
    port = reserve_port()
    m = start(tmp, trust_loopback=True,
              SIPMESH_EDGE_LISTEN=f"udp:127.0.0.1:{port},tcp:127.0.0.1:{port}")
    yield m
    assert m.mesh.stop() == 0


def test_list_tcp_conns_shows_the_phones_connection(om: OperatorMesh) -> None:
    assert om.cli("list_tcp_conns") == {"Connections": []}
    with socket.create_connection(("127.0.0.1", om.sip_port), timeout=10) as phone:
        mine = phone.getsockname()
        phone.sendall(
            (f"OPTIONS sip:127.0.0.1:{om.sip_port} SIP/2.0\r\n"
             f"Via: SIP/2.0/TCP 127.0.0.1:{mine[1]};branch=z9hG4bKtcp1\r\n"
             "Max-Forwards: 70\r\nFrom: <sip:ops@127.0.0.1>;tag=1\r\n"
             f"To: <sip:127.0.0.1:{om.sip_port}>\r\nCall-ID: tcp-conns-1\r\n"
             "CSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n").encode())
        assert phone.recv(4096).startswith(b"SIP/2.0 ")
        [conn] = om.cli("list_tcp_conns")["Connections"]
        assert conn["Type"] == "tcp" and conn["State"] == 0
        assert conn["Remote"] == f"127.0.0.1:{mine[1]}"
        assert conn["Local"] == f"127.0.0.1:{om.sip_port}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", conn["Lifetime"])


def test_transaction_time_histogram_counts_sipp_calls(om: OperatorMesh) -> None:
    metrics_url = om.mesh.line(r"^endpoint edge metrics (\S+)").group(1)
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    try:
        done = om.call(f"127.0.0.1:{uas_port}", calls=5, rate=20)
        assert done.returncode == 0, done.stdout[-2000:]
    finally:
        uas.terminate()
        uas.wait(10)
    text = urllib.request.urlopen(metrics_url, timeout=10).read().decode()
    count = re.search(
        r'^sipmesh_edge_transaction_seconds_count\{class="2xx",method="INVITE"\} (\S+)$',
        text, re.M)
    assert count is not None and float(count.group(1)) >= 5, text[-3000:]
    assert re.search(r'^sipmesh_edge_transaction_seconds_count\{class="2xx",method="BYE"\} ',
                     text, re.M)
    assert 'sipmesh_edge_transaction_seconds_bucket{class="2xx",le="0.001",method="INVITE"}' \
        in text
