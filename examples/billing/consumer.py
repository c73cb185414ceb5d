"""A billing consumer of the mesh's CDRs (step 3 of the README's billing flow).

    python examples/billing/consumer.py --amqp amqp://guest:guest@127.0.0.1:5672/ \
        --exchange sipmesh.events --queue billing-cdrs --out cdrs.jsonl

It binds a durable queue of its own to the events exchange for every E_ACC_CDR (`#.E_ACC_CDR`
matches the plain routing key and the family one, `acc.E_ACC_CDR`), and for each CDR
prints the charge line and appends the CDR to `--out` as one JSON line. A message is
acknowledged only after it was written, so a consumer that dies loses nothing (the broker
redelivers). CDRs are deduplicated by `cdr_id` (the dialog's identity): a redelivery, or
the rare event raised twice around a crash, is written with `"duplicate": true` and never
charged twice. `--count N` stops after N distinct CDRs, `--idle S` after S seconds with no
message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import aio_pika


def charge_line(cdr: dict[str, Any]) -> str:
    return (f"charge {cdr.get('account') or cdr.get('caller')} for {cdr['duration']} s "
            f"to {cdr.get('callee')} (call {cdr['callid']}, ended by {cdr.get('end_reason')})")


async def consume(url: str, exchange: str, queue_name: str, out: Path | None,
                  count: int, idle: float) -> int:
    seen: set[str] = set()
    if out is not None and out.exists():  # a restarted consumer remembers what it charged
        for line in out.read_text().splitlines():
            with contextlib.suppress(ValueError, KeyError):
                seen.add(json.loads(line)["cdr_id"])
    connection = await aio_pika.connect(url)
    async with connection:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=100)
        ex = await channel.declare_exchange(exchange, aio_pika.ExchangeType.TOPIC, durable=True)
        queue = await channel.declare_queue(queue_name, durable=True)
        await queue.bind(ex, routing_key="#.E_ACC_CDR")
        print(f"consumer ready queue={queue_name}", file=sys.stderr, flush=True)
        distinct = 0
        async with queue.iterator() as messages:
            while count <= 0 or distinct < count:
                try:
                    message = await asyncio.wait_for(anext(messages), idle or None)
                except TimeoutError:
                    break
                cdr = json.loads(message.body)
                cdr.pop("_envelope", None)
                duplicate = cdr["cdr_id"] in seen
                cdr["duplicate"] = duplicate
                if not duplicate:
                    seen.add(cdr["cdr_id"])
                    distinct += 1
                    print(charge_line(cdr), flush=True)
                if out is not None:
                    with out.open("a") as fh:
                        fh.write(json.dumps(cdr) + "\n")
                await message.ack()
    return distinct


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--amqp", default="amqp://guest:guest@127.0.0.1:5672/")
    p.add_argument("--exchange", default="sipmesh.events")
    p.add_argument("--queue", default="billing-cdrs")
    p.add_argument("--out", type=Path)
    p.add_argument("--count", type=int, default=0)
    p.add_argument("--idle", type=float, default=0.0)
    args = p.parse_args()
    try:
        distinct = asyncio.run(consume(args.amqp, args.exchange, args.queue, args.out,
                                       args.count, args.idle))
    except KeyboardInterrupt:
        return 0
    print(f"{distinct} CDRs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
