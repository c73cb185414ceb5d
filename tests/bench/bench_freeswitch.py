"""FreeSWITCH bridge figures (a script, not a test): run by `make bench`.

The peer is greenswitch, the gevent ESL client (Kamailio has no Event Socket client to
measure against).  Both clients run in processes of their own against the same fake
FreeSWITCH in this process, and are measured the same way:

1. event intake: 20,000 CUSTOM events (~1.4 KB, the size of a CHANNEL_* event) encoded
   beforehand and written at once, timed from the write to the last event the client
   handled (its handler called); each client subscribes its own way (json / plain);
2. api round trips: 2,000 sequential `api echo x`, p50 and p99;
3. the edge's `select()` (the pick on the SIP path): microseconds per call, 3 boxes.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from services.freeswitch.balancing import Balancer, BoxLoad
from services.freeswitch.testing.fake_freeswitch import FakeFreeswitch, _event_frame

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = Path(__file__).with_name("freeswitch_clients.py")
EVENTS = 20_000
CALLS = 2_000
# Headers of a typical CHANNEL_CREATE, so an event weighs what real ones weigh.
PAD = {f"variable_sip_h_X-Bench-{i}": "v" * 40 for i in range(20)}


async def measure(kind: str) -> dict[str, float]:
    fake = await FakeFreeswitch(heartbeat_interval=3600).start()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(CLIENTS), kind, fake.host, str(fake.port), str(EVENTS),
        str(CALLS), cwd=ROOT, stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout is not None
        while (line := await asyncio.wait_for(proc.stdout.readline(), 30)).strip() != \
                b"ready":
            assert line, "the client exited before it was ready"  # (its logs go by)
        # Every event encoded first (in the client's format) and written at once: the
        # fake's own encoding must not be what is measured.
        [listener] = fake.authed_listeners
        frames = [_event_frame({"Event-Name": "CUSTOM", "Core-UUID": fake.core_uuid,
                                "Event-Subclass": "sipmesh::bench", "Event-Sequence": str(i),
                                **PAD}, "", listener.fmt) for i in range(EVENTS)]
        data = b"".join(frames)
        written = time.time()
        listener.writer.write(data)
        while not (out := await asyncio.wait_for(proc.stdout.readline(), 300)).startswith(
                b"{"):
            assert out, "the client exited without its figures"
        await proc.wait()
        figures = dict(json.loads(out))
        figures["events_per_s"] = EVENTS / (figures["last_event_at"] - written)
        return figures
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        await fake.stop()


def select_cost() -> float:
    b = Balancer("weight")
    b.update([BoxLoad(f"b{i}", "media", f"sip:b{i}", True, 10 * i, 100, 90.0, 0.0, 1e9)
              for i in range(3)])
    n = 200_000
    started = time.perf_counter()
    for _ in range(n):
        b.select("media", 1.0)
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    ours = asyncio.run(measure("sipmesh"))
    peer = asyncio.run(measure("greenswitch"))
    print(f"ESL event intake ({EVENTS} events of ~1.4 KB):")
    print(f"  SipMesh client   {ours['events_per_s']:10,.0f} events/s")
    print(f"  greenswitch      {peer['events_per_s']:10,.0f} events/s")
    print(f"  ratio            {ours['events_per_s'] / peer['events_per_s']:10.2f}")
    print(f"api round trip ({CALLS} sequential `api echo`):")
    print(f"  SipMesh client   p50 {ours['api_p50_us']:7.0f} us  p99 {ours['api_p99_us']:7.0f} us")
    print(f"  greenswitch      p50 {peer['api_p50_us']:7.0f} us  p99 {peer['api_p99_us']:7.0f} us")
    print(f"  ratio (p50, lower is better) {ours['api_p50_us'] / peer['api_p50_us']:.2f}")
    print(f"edge select(): {select_cost():.2f} us per call (3 boxes, weight policy)")


if __name__ == "__main__":
    main()
