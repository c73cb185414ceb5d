"""Benchmark: the media broker against talking to rtpengine directly, and calls anchored
by edge + broker + rtpengine against Kamailio + its rtpengine module + the same daemon.

1. **ng round trips.**  offer + answer + delete sequences per second with 32 sequences in
   flight, from one process: (a) straight to rtpengine over UDP (this module's own ng
   client on the broker's sans-IO core), (b) through a media broker process over gRPC
   (what the edge does).  Ratio b/a: the broker's cost on top of rtpengine's own.
2. **Call rate.**  sipp UAC -> proxy -> sipp UAS, calls with SDP and no hold time, the rate
   rising step by step (`--step` seconds, $BENCH_STEP_SECONDS or 4); a step passes when at
   most 0.1% of its calls failed and it ended within 10% (+1 s) of its length.  Proxies:
   the SipMesh edge (one worker, `[edge] media_anchor = true`) + one broker, and Kamailio
   5.6 (one UDP worker, tests/bench/media/kamailio_rtpengine.cfg: offer, answer, delete
   with its rtpengine module), each with a fresh rtpengine 10.5 daemon (userspace).
   Printed: both maxima and the ratio.

    .venv/bin/python tests/bench/bench_media.py [--step S] [--only ng,calls]

Not a test: the figures depend on the machine and whatever else runs on it.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from services.media.ng import NgProtocol  # noqa: E402
from tests.integration.edge.edge_harness import free_port, start_edge, stop_process  # noqa: E402
from tests.integration.media.harness import SCENARIOS, RtpEngine, start_broker  # noqa: E402

KAMAILIO_CFG = Path(__file__).resolve().parent / "media" / "kamailio_rtpengine.cfg"
SDP = ("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
       "m=audio {port} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n")
FLAGS = ["origin", "session-connection"]
RATES = [25, 50, 100, 150, 200, 300, 400, 500, 600, 800, 1000, 1250, 1500, 2000]
IN_FLIGHT = 32


# -- 1. ng round trips ----------------------------------------------------------------------
class _Direct(asyncio.DatagramProtocol):
    """A bare ng client: the broker's sans-IO core, one socket, no broker logic."""

    def __init__(self, port: int) -> None:
        self.ng = NgProtocol(f"bench{os.getpid()}", timeout=2.0, tries=3)
        self.port = port
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        got = self.ng.receive(data)
        if got is not None and not got.tag.done():
            got.tag.set_result(got.message)

    async def call(self, message: dict[str, object]) -> dict[str, object]:
        fut: asyncio.Future[dict[str, object]] = asyncio.get_running_loop().create_future()
        _, data = self.ng.request(("127.0.0.1", self.port), message, time.monotonic(), fut)
        assert self.transport is not None
        self.transport.sendto(data)
        return await asyncio.wait_for(fut, 5)


async def _direct(engine: RtpEngine, seconds: float) -> float:
    loop = asyncio.get_running_loop()
    _, proto = await loop.create_datagram_endpoint(
        lambda: _Direct(engine.ng_port), remote_addr=("127.0.0.1", engine.ng_port))
    done = 0
    end = time.monotonic() + seconds

    async def worker(w: int) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < end:
            n += 1
            cid, tag = f"d{w}-{n}-{os.getpid()}", f"a{w}"
            base = {"call-id": cid, "from-tag": tag}
            await proto.call({**base, "command": "offer", "sdp": SDP.format(port=9000),
                              "replace": FLAGS})
            await proto.call({**base, "command": "answer", "to-tag": "b",
                              "sdp": SDP.format(port=9002), "replace": FLAGS})
            await proto.call({**base, "command": "delete"})
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))
    elapsed = time.monotonic() - started
    assert proto.transport is not None
    proto.transport.close()
    return done / elapsed


async def _brokered(grpc: str, seconds: float) -> float:
    from services.edge.media_client import MediaClient

    client = MediaClient(addresses=[grpc], timeout=10)
    done = 0
    end = time.monotonic() + seconds
    flags = "replace-origin replace-session-connection"

    async def worker(w: int) -> None:
        nonlocal done
        n = 0
        while time.monotonic() < end:
            n += 1
            cid = f"b{w}-{n}-{os.getpid()}"
            req = client.request
            r = await client.call("Offer", req(call_id=cid, from_tag=f"a{w}", flags=flags,
                                               sdp=SDP.format(port=9000).encode()))
            assert r.ok, r.error
            r = await client.call("Answer", req(call_id=cid, from_tag=f"a{w}", to_tag="b",
                                                reply=True, flags=flags, instance=r.instance,
                                                sdp=SDP.format(port=9002).encode()))
            assert r.ok, r.error
            d = await client.call("Delete", req(call_id=cid, from_tag=f"a{w}",
                                                instance=r.instance))
            assert d.ok, d.error
            done += 1

    started = time.monotonic()
    await asyncio.gather(*(worker(w) for w in range(IN_FLIGHT)))
    elapsed = time.monotonic() - started
    await client.close()
    return done / elapsed


def bench_ng(workdir: Path, seconds: float) -> None:
    engine = RtpEngine(workdir).start()
    db = workdir / "ng.sqlite"
    env = {"SIPMESH_MEDIA_RTPENGINE_SOCK": f"0 == {engine.url}"}
    broker = start_broker(db, env)
    try:
        direct = asyncio.run(_direct(engine, seconds))
        brokered = asyncio.run(_brokered(broker.grpc, seconds))
    finally:
        broker.stop()
        engine.kill()
    print(f"ng offer+answer+delete, {IN_FLIGHT} in flight, one process:")
    print(f"  direct to rtpengine      {direct:8.0f} /s")
    print(f"  through the broker (gRPC){brokered:8.0f} /s")
    print(f"  ratio broker/direct      {brokered / direct:8.2f}", flush=True)


# -- 2. call rate ---------------------------------------------------------------------------
def _step(target: str, uas_port: int, rate: int, step: float, workdir: Path) -> bool:
    calls = max(1, int(rate * step))
    cmd = ["sipp", "-sf", str(SCENARIOS / "uac_sdp.xml"), "-i", "127.0.0.1",
           "-p", str(free_port()), "-rsa", target, f"127.0.0.1:{uas_port}", "-s", "bench",
           "-m", str(calls), "-r", str(rate), "-nostdin", "-buff_size", "1048576",
           "-timeout", f"{int(step * 2 + 30)}s", "-timeout_error",
           "-trace_stat", "-stf", str(workdir / "stat.csv")]
    started = time.monotonic()
    out = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True)
    elapsed = time.monotonic() - started
    failed = 0
    for line in out.stdout.splitlines():
        if line.strip().startswith("Failed call"):
            failed = int(line.split("|")[-1].split()[0])
    ok = failed <= calls * 0.001 and elapsed <= step * 1.1 + 1.0
    print(f"    {rate:5d} calls/s: {calls} calls, {failed} failed, {elapsed:.1f} s "
          f"{'ok' if ok else 'FAIL'}", flush=True)
    return ok


def climb(name: str, target: str, uas_port: int, step: float, workdir: Path) -> int:
    best = 0
    print(f"  {name}:", flush=True)
    for rate in RATES:
        if not (_step(target, uas_port, rate, step, workdir)
                or _step(target, uas_port, rate, step, workdir)):  # one retry: shared box
            break
        best = rate
    return best


def bench_calls(workdir: Path, step: float) -> None:
    uas_port = free_port()
    uas = subprocess.Popen(["sipp", "-sf", str(SCENARIOS / "uas_sdp.xml"), "-i", "127.0.0.1",
                            "-p", str(uas_port), "-nostdin", "-buff_size", "1048576"],
                           cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results: dict[str, int] = {}
    try:
        engine = RtpEngine(workdir / "e1").start()
        broker = start_broker(workdir / "calls.sqlite",
                              {"SIPMESH_MEDIA_RTPENGINE_SOCK": f"0 == {engine.url}"})
        edge = start_edge({"SIPMESH_EDGE_MEDIA": broker.grpc, "SIPMESH_EDGE_MEDIA_ANCHOR": "true",
                           "SIPMESH_EDGE_T1": "0.5", "SIPMESH_EDGE_TIMER_C": "180",
                           "SIPMESH_EDGE_UVLOOP": "true"})
        try:
            results["sipmesh"] = climb("edge + broker + rtpengine", edge.address, uas_port,
                                       step, workdir)
        finally:
            edge.stop()
            broker.stop()
            engine.kill()
        engine = RtpEngine(workdir / "e2").start()
        port = free_port()
        kam = subprocess.Popen(
            ["kamailio", "-f", str(KAMAILIO_CFG), "-DD", "-E", "-m", "1024", "-M", "32",
             "-l", f"udp:127.0.0.1:{port}", "-n", "1", "-w", str(workdir),
             "-P", str(workdir / "kam.pid"), "-A", f'RTPENGINE="{engine.url}"'],
            cwd=workdir, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            from tests.integration.edge.edge_harness import options_ping, wait_until

            wait_until(lambda: options_ping("127.0.0.1", port) is not None, 20, "kamailio")
            results["kamailio"] = climb("Kamailio + rtpengine module", f"127.0.0.1:{port}",
                                        uas_port, step, workdir)
        finally:
            stop_process(kam)
            engine.kill()
    finally:
        stop_process(uas)
    ours, theirs = results.get("sipmesh", 0), results.get("kamailio", 0)
    print(f"calls with media anchored (max calls/s, <=0.1% failed, {step:g} s steps):")
    print(f"  SipMesh edge + broker + rtpengine   {ours}")
    print(f"  Kamailio 5.6 + rtpengine module     {theirs}")
    print(f"  ratio                               {ours / theirs if theirs else 0:.2f}",
          flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--step", type=float,
                        default=float(os.environ.get("BENCH_STEP_SECONDS", "4")))
    parser.add_argument("--seconds", type=float, default=5.0, help="ng measurement length")
    parser.add_argument("--only", default="ng,calls")
    args = parser.parse_args()
    for tool in ("rtpengine", "sipp", "kamailio"):
        if shutil.which(tool) is None:
            print(f"bench_media: {tool} is missing (tests/peers/ensure.sh installs it)")
            return 1
    with tempfile.TemporaryDirectory(prefix="bench-media-") as tmp:
        workdir = Path(tmp)
        only = set(args.only.split(","))
        if "ng" in only:
            bench_ng(workdir, args.seconds)
        if "calls" in only:
            bench_calls(workdir, args.step)
    return 0


if __name__ == "__main__":
    sys.exit(main())
