"""RabbitMQ pieces of the dialog tests: an exchange of their own, the example billing
consumer as a real process, and clean-up."""

from __future__ import annotations

import asyncio
import json
import os
import select
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
AMQP = "amqp://guest:guest@127.0.0.1:5672/"


def names() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:10]
    return f"test.dialog.{tag}", f"test.billing.{tag}"


class Consumer:
    """examples/billing/consumer.py running against the test's exchange."""

    def __init__(self, tmp: Path, exchange: str, queue: str) -> None:
        self.out = tmp / f"{queue}.jsonl"
        self.exchange, self.queue = exchange, queue
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "examples" / "billing" / "consumer.py"), "--amqp", AMQP,
             "--exchange", exchange, "--queue", queue, "--out", str(self.out)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env=dict(os.environ, PYTHONPATH=str(ROOT)))
        assert self.proc.stderr is not None
        ready, _, _ = select.select([self.proc.stderr], [], [], 30)
        line = self.proc.stderr.readline() if ready else ""
        if "consumer ready" not in line:
            self.stop()
            raise RuntimeError(f"consumer did not start: {line!r}")

    def records(self) -> list[dict[str, Any]]:
        if not self.out.exists():
            return []
        return [json.loads(ln) for ln in self.out.read_text().splitlines() if ln.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def delete(exchange: str, queue: str) -> None:
    import aio_pika

    async def run() -> None:
        connection = await aio_pika.connect(AMQP)
        async with connection:
            channel = await connection.channel()
            await channel.queue_delete(queue)
            await channel.exchange_delete(exchange)

    asyncio.run(run())
