"""Capture destinations (services/edge/capture_sinks.py, services/edge/pcap.py): HEP v3
over UDP and TCP to the fake collectors decoding per the spec, a pcap file read back by a
reader written from the format, and by sngrep (a real reader) when installed."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
from pathlib import Path

import pytest

from services.edge.capture_sinks import PcapFileSink, open_sink, parse_uri
from services.edge.hep import Capture
from tests.support.hep_collector import HepCollector, HepTcpCollector
from tests.support.pcap_reader import read
from tests.support.ports import reserve_port
from tests.support.waiting import eventually


def sip(call_id: str, start: str = "INVITE sip:bob@example.com SIP/2.0") -> bytes:
    return (f"{start}\r\nVia: SIP/2.0/UDP 192.0.2.1:5060;branch=z9hG4bK{call_id}\r\n"
            f"From: <sip:alice@example.com>;tag=1\r\nTo: <sip:bob@example.com>\r\n"
            f"Call-ID: {call_id}\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n"
            f"Content-Length: 0\r\n\r\n").encode()


def cap(data: bytes, transport: str = "udp", src: tuple[str, int] = ("192.0.2.1", 5060),
        dst: tuple[str, int] = ("198.51.100.2", 5080), t: float = 1700000000.5) -> Capture:
    return Capture(data, src, dst, transport, t, "x")


def test_destination_uris() -> None:
    assert parse_uri("10.0.0.1:9060") == ("udp", "10.0.0.1", 9060)
    assert parse_uri("hep:10.0.0.1:9060") == ("udp", "10.0.0.1", 9060)
    assert parse_uri("hep:10.0.0.1:9060;transport=tcp") == ("tcp", "10.0.0.1", 9060)
    assert parse_uri("tcp:[2001:db8::1]:9061") == ("tcp", "2001:db8::1", 9061)
    assert parse_uri("file:/var/log/sip.pcap") == ("file", "", "/var/log/sip.pcap")
    assert parse_uri("file:///tmp/x.pcap") == ("file", "", "/tmp/x.pcap")
    for bad in ("10.0.0.1", "hep:host:0", "hep:h:1;transport=sctp", "file:", ":9060"):
        with pytest.raises(ValueError):
            parse_uri(bad)


async def test_hep_over_udp_and_tcp_reach_collectors_that_decode_strictly() -> None:
    udp = await HepCollector.open()
    tcp = await HepTcpCollector.open()
    sinks = [open_sink(f"hep:{udp.address}", capture_id=7),
             open_sink(f"hep:{tcp.address};transport=tcp", capture_id=7, auth_key="k")]
    try:
        for i in range(20):
            for sink in sinks:
                assert sink.emit(cap(sip(f"call{i}")))
        await eventually(lambda: len(udp.packets) == 20 and len(tcp.packets) == 20, 10,
                         "20 packets at each collector")
        assert udp.errors == [] and tcp.errors == [] and tcp.connections == 1
        assert [p.payload for p in tcp.packets] == [sip(f"call{i}") for i in range(20)]
        assert tcp.packets[0].fields["auth_key"] == "k"
        assert tcp.packets[0].fields["capture_id"] == 7
        assert tcp.packets[0].src == ("192.0.2.1", 5060)
    finally:
        for sink in sinks:
            sink.close()
        udp.close()
        tcp.close()


async def test_a_tcp_collector_that_is_down_costs_drops_not_sip_and_is_retried() -> None:
    port = reserve_port()
    sink = open_sink(f"tcp:127.0.0.1:{port}")
    try:
        sink.emit(cap(sip("lost")))  # queued while connecting; the connect fails
        await eventually(lambda: getattr(sink, "connecting", None) is None, 10, "the attempt")
        collector = await HepTcpCollector.open(port=port)
        try:
            # within RETRY s a new attempt is made and what follows arrives
            async def delivered() -> bool:
                sink.emit(cap(sip("later")))
                await asyncio.sleep(0.2)
                return bool(collector.packets)

            deadline = asyncio.get_running_loop().time() + 15
            while not await delivered():
                assert asyncio.get_running_loop().time() < deadline, "never reconnected"
            assert all(p.payload == sip("later") for p in collector.packets)
        finally:
            collector.close()
    finally:
        sink.close()


def test_a_pcap_file_reads_back_per_the_format(tmp_path: Path) -> None:
    path = tmp_path / "trace.pcap"
    first, second = PcapFileSink("file:x", str(path)), PcapFileSink("file:x", str(path))
    try:  # two workers appending to one file: one header, every record whole
        assert first.emit(cap(sip("u4")))
        assert second.emit(cap(sip("t4"), "tcp", ("192.0.2.1", 5061)))
        assert first.emit(cap(sip("t4b"), "tcp", ("192.0.2.1", 5061)))
        assert second.emit(cap(sip("u6"), "udp", ("2001:db8::1", 5060), ("2001:db8::2", 5060)))
        assert first.emit(cap(sip("named"), "udp", ("192.0.2.1", 5060), ("gw.example", 5060)))
        assert not first.emit(cap(b"x" * 70000))
    finally:
        first.close()
        second.close()
    frames = read(path)
    assert [f.payload for f in frames] == [sip(c) for c in ("u4", "t4", "t4b", "u6", "named")]
    assert frames[0].src == ("192.0.2.1", 5060) and frames[0].dst == ("198.51.100.2", 5080)
    assert frames[0].transport == "udp" and abs(frames[0].time - 1700000000.5) < 1e-6
    assert frames[1].transport == "tcp" and frames[3].src == ("2001:db8::1", 5060)
    assert frames[4].dst == ("0.0.0.0", 5060)


@pytest.mark.skipif(shutil.which("sngrep") is None, reason="sngrep not installed")
def test_sngrep_reads_the_pcap_file(tmp_path: Path) -> None:
    path = tmp_path / "trace.pcap"
    sink = PcapFileSink("file:x", str(path))
    ok = sip("dlg1").replace(b"INVITE sip:bob@example.com SIP/2.0", b"SIP/2.0 200 OK")
    try:
        sink.emit(cap(sip("dlg1")))
        sink.emit(cap(ok, src=("198.51.100.2", 5080), dst=("192.0.2.1", 5060)))
        sink.emit(cap(sip("dlg2"), "tcp"))
        sink.emit(cap(sip("dlg3"), "udp", ("2001:db8::1", 5060), ("2001:db8::2", 5060)))
    finally:
        sink.close()
    out = tmp_path / "again.pcap"
    run = subprocess.run(["sngrep", "-N", "-I", str(path), "-O", str(out)],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "Dialog count: 3" in run.stdout, run.stdout
    # what sngrep parsed as SIP and saved again is every message
    assert [f.payload for f in read(out)] == [sip("dlg1"), ok, sip("dlg2"), sip("dlg3")]


@pytest.mark.skipif(shutil.which("sngrep") is None, reason="sngrep not installed")
async def test_sngrep_as_a_hep_server_takes_the_packets(tmp_path: Path) -> None:
    """sngrep -L is a real HEP v3 (EEP) listener: it must see the dialogs we send."""
    port = reserve_port()
    out, log = tmp_path / "hep.pcap", tmp_path / "sngrep.out"
    with log.open("wb") as stdout:
        proc = subprocess.Popen(["sngrep", "-N", "-L", f"udp:127.0.0.1:{port}", "-O", str(out)],
                                stdin=subprocess.DEVNULL, stdout=stdout,
                                stderr=subprocess.STDOUT)
    sink = open_sink(f"hep:127.0.0.1:{port}", capture_id=3)
    calls = [sip(f"hep{i}") for i in range(3)]
    try:
        await eventually(lambda: f":{port:04X} " in Path("/proc/net/udp").read_text(), 10,
                         "sngrep listening")

        def all_seen() -> bool:
            for data in calls:  # sent again until seen: a datagram may beat the socket
                sink.emit(cap(data))
            return "Dialog count: 3" in log.read_text(errors="replace")

        await eventually(all_seen, 15, "sngrep counting the 3 dialogs")
    finally:
        sink.close()
        proc.terminate()
        proc.wait(10)
    got = {f.payload for f in read(out, checksums=False)}
    assert got == set(calls)


def test_bad_destinations_are_refused_when_the_config_loads(tmp_path: Path) -> None:
    from services.edge.config import EdgeConfigError, load_config

    path = tmp_path / "sipmesh.toml"
    good = ('[edge]\nhep_dest = "file:/tmp/x.pcap"\n'
            'trace_ids = ["cap=hep:10.0.0.5:9060;transport=tcp", "disk=file:/tmp/y.pcap"]\n')
    path.write_text(good)
    assert load_config(path, environ={}).trace_ids == (
        "cap=hep:10.0.0.5:9060;transport=tcp", "disk=file:/tmp/y.pcap")
    for bad in ('trace_ids = ["cap"]', 'trace_ids = ["cap=hep:nowhere"]',
                'hep_dest = "10.0.0.5"'):
        path.write_text(f"[edge]\n{bad}\n")
        with pytest.raises(EdgeConfigError, match="capture destination"):
            load_config(path, environ={})
