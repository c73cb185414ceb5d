"""The two ESL clients the FreeSWITCH bench compares, each run in a process of its own:
SipMesh's (`services.freeswitch.client`, asyncio) and greenswitch (gevent), the peer.

    python freeswitch_clients.py sipmesh|greenswitch HOST PORT EVENTS API_CALLS

Connects, subscribes CUSTOM events (json for SipMesh, plain for greenswitch: each
client's own way), prints `ready`, counts EVENTS events from the first to the last, then
makes API_CALLS sequential `api echo` round trips; prints one JSON line of figures (the
wall-clock time the last event was handled: the bench divides by its own start time).
"""

from __future__ import annotations

import json
import statistics
import sys
import time


def _figures(last: float, rtts: list[float]) -> str:
    rtts.sort()
    return json.dumps({
        "last_event_at": last,  # time.time(): the bench knows when it wrote the first
        "api_p50_us": statistics.median(rtts) * 1e6,
        "api_p99_us": rtts[int(len(rtts) * 0.99) - 1] * 1e6,
    })


def run_sipmesh(host: str, port: int, events: int, calls: int) -> None:
    import asyncio

    from services.freeswitch.boxes import BoxSpec
    from services.freeswitch.client import ClientConfig, EslClient

    async def main() -> None:
        done = asyncio.Event()
        times: list[float] = []

        def on_event(_client: object, event: object) -> None:
            times.append(time.time())
            if len(times) == events:
                done.set()

        client = EslClient(BoxSpec(host, port, "ClueCon"), ["CUSTOM"],
                           ClientConfig(heartbeat_timeout=3600), on_event=on_event)
        client.start()
        while not client.up:
            await asyncio.sleep(0.005)
        await client.api("echo sync")  # the subscription is in place once this answers
        print("ready", flush=True)
        await asyncio.wait_for(done.wait(), 120)
        rtts = []
        for _ in range(calls):
            started = time.perf_counter()
            await client.api("echo x")
            rtts.append(time.perf_counter() - started)
        print(_figures(times[-1], rtts), flush=True)
        await client.stop()

    asyncio.run(main())


def run_greenswitch(host: str, port: int, events: int, calls: int) -> None:
    import greenswitch
    from gevent.event import Event

    times: list[float] = []
    done = Event()

    def on_event(_event: object) -> None:
        times.append(time.time())
        if len(times) == events:
            done.set()

    esl = greenswitch.InboundESL(host=host, port=port, password="ClueCon")
    esl.connect()
    esl.register_handle("sipmesh::bench", on_event)  # CUSTOM events go by subclass
    esl.send("event plain CUSTOM")
    print("ready", flush=True)
    done.wait(120)
    rtts = []
    for _ in range(calls):
        started = time.perf_counter()
        esl.send("api echo x")
        rtts.append(time.perf_counter() - started)
    print(_figures(times[-1], rtts), flush=True)
    esl.stop()


if __name__ == "__main__":
    kind, host, port, n_events, n_calls = sys.argv[1:6]
    runner = run_sipmesh if kind == "sipmesh" else run_greenswitch
    runner(host, int(port), int(n_events), int(n_calls))
