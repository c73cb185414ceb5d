"""The best case of "edge and registrar in one process", measured (not a product, not a test).

A uvloop UDP server around `hotpath.py register`'s in-process pipeline: the edge's
ProxyCore with the default routing, the 401 on its short path, and the registrar's own
sans-IO Save (digest check on the Save's request, `Location.save` in memory, the answer's
headers) called in place of the gRPC hop (hotpath's FakeRegistrar: a dict of
subscribers, no SQLite, no durable write; Kamailio's bench config also saves in memory,
usrloc db_mode 0).  No gRPC, no second process, no task per REGISTER: what a Python
REGISTER path could cost with sockets and an event loop, before any durability.

Measured like `bench_registrar.py --only vs`: sipp's register_load.xml with one
subscriber at RATE/s, this server and Kamailio (the bench's db_text config, one worker)
interleaved, CPU per REGISTER flow from /proc (all their processes).

    .venv/bin/python tests/bench/one_process.py [--rate 500] [--step 4] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import bench_registrar as br  # noqa: E402


def user_system(sid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of every live process in session `sid`."""
    user = system = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[3] == str(sid):
            user += int(fields[11])
            system += int(fields[12])
    tick = os.sysconf("SC_CLK_TCK")
    return user / tick, system / tick


def serve(port: int) -> None:
    """The server process: the pipeline on 127.0.0.1:`port` until killed."""
    import time

    import hotpath
    import uvloop

    from services.edge.addresses import Interface, Source
    from services.edge.core import Await, Send
    from services.registrar.subscribers import Subscriber, ha1_hashes
    from shared.service.gc_policy import tune_collector

    hotpath.EDGE = edge = Interface("udp", "127.0.0.1", port)
    flow = hotpath.RegisterFlow(users=1)
    fake = flow.registrar
    fake.creds = {br.USER: hotpath.Credentials(*ha1_hashes(br.USER, "127.0.0.1",
                                                           br.PASSWORD))}
    c = fake.creds[br.USER]
    fake.subscribers = {(br.USER, "127.0.0.1"): Subscriber(br.USER, "127.0.0.1", c.ha1,
                                                           c.ha1_sha256)}
    core = flow.core

    class Server(asyncio.DatagramProtocol):
        transport: Any

        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            now = time.monotonic()
            fake.now = time.time()
            outs: list[Any] = core.receive(data, Source(edge, addr[0], addr[1]), now)
            while outs:
                more: list[Any] = []
                for o in outs:
                    if isinstance(o, Send):
                        self.transport.sendto(o.data, (o.dest.host, o.dest.port))
                    elif isinstance(o, Await):  # the Save: done in place, never suspends
                        try:
                            o.awaitable.send(None)  # type: ignore[attr-defined]
                        except StopIteration:
                            pass
                        more += o.resume(now)
                outs = more

    async def main() -> None:
        loop = asyncio.get_running_loop()
        await loop.create_datagram_endpoint(Server, local_addr=("127.0.0.1", port))

        async def timers() -> None:
            while True:
                await asyncio.sleep(0.01)
                now = time.monotonic()
                while (d := core.next_deadline()) is not None and d <= now:
                    core.handle_timer(d)

        print("ready", flush=True)
        await timers()

    tune_collector()
    uvloop.run(main())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--step", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return 0
    workdir = Path(tempfile.mkdtemp(prefix="one-process-"))
    port = br.free_port()
    env = dict(os.environ, PYTHONPATH=str(br.ROOT))
    proc = subprocess.Popen([sys.executable, __file__, "--serve", str(port)], env=env,
                            stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout is not None
    assert b"ready" in proc.stdout.readline()
    (workdir / "kam").mkdir()
    kam = br.start_kamailio(workdir / "kam", 1)
    try:
        for rnd in range(args.rounds):
            per = {}
            for name, pid, p in (("one process", proc.pid, port),
                                 ("kamailio", kam.proc.pid, kam.port)):
                u0, s0 = user_system(pid)
                ok, failed, _, _ = br.run_step(p, args.rate, args.step, workdir)
                u1, s1 = user_system(pid)
                per[name] = (u1 + s1 - u0 - s0) / max(ok, 1)
                print(f"  round {rnd + 1} {name:<11}: {ok} ok {failed} failed, "
                      f"{per[name] * 1e6:4.0f} us per REGISTER flow (user "
                      f"{(u1 - u0) / max(ok, 1) * 1e6:.0f}, system "
                      f"{(s1 - s0) / max(ok, 1) * 1e6:.0f})", flush=True)
            print(f"  kamailio/one process {per['kamailio'] / per['one process']:.2f} "
                  f"(load {os.getloadavg()[0]:.1f})", flush=True)
    finally:
        br.stop(kam.proc)
        br.stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
