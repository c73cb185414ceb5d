"""``sipmesh events [NAME...]``: stream events live from RabbitMQ, pretty-printed.

A private queue (deleted when the command exits) is bound to the events exchange with one
binding per event name given, or ``#`` for all. Each event is printed as one header line
(time, event name, service/node) followed by its parameters, one per line; ``--json``
prints the raw body instead (one JSON object per line, for piping to ``jq``).
``--count N`` exits after N events. Wire it in ``shared/cli/main.py`` with
``events_cli.register(app)``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Annotated, TextIO

import typer

from shared.events.consumer import RabbitMQEventConsumer
from shared.events.envelope import ENVELOPE_KEY, Event
from shared.events.rabbitmq import DEFAULT_EXCHANGE, DEFAULT_URL


def format_event(event: Event, as_json: bool = False) -> str:
    if as_json:
        return json.dumps({**event.params, ENVELOPE_KEY: event.envelope()}, sort_keys=True)
    when = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    lines = [f"{when} {event.name}  ({event.service}/{event.node})"]
    width = max((len(k) for k in event.params), default=0)
    lines += [f"    {k:<{width}} : {json.dumps(v)}" for k, v in event.params.items()]
    return "\n".join(lines)


async def stream_events(
    names: Sequence[str], *, url: str, exchange: str, count: int | None = None,
    as_json: bool = False, out: TextIO = sys.stdout, ready: asyncio.Event | None = None,
) -> int:
    """Print events until ``count`` were printed (or forever); returns how many."""
    done = asyncio.Event()
    printed = 0

    async def show(event: Event) -> None:
        nonlocal printed
        if count is not None and printed >= count:
            return
        print(format_event(event, as_json), file=out, flush=True)
        printed += 1
        if count is not None and printed >= count:
            done.set()

    consumer = RabbitMQEventConsumer(show, url=url, exchange=exchange,
                                     patterns=list(names) or ["#"])
    await consumer.start()
    try:
        if ready is not None:
            await consumer.ready.wait()
            ready.set()
        await done.wait()
    finally:
        await consumer.close()
    return printed


def register(app: typer.Typer) -> None:
    @app.command("events")
    def events(
        names: Annotated[
            list[str] | None, typer.Argument(help="event names (default: all events)")
        ] = None,
        url: Annotated[str, typer.Option(help="RabbitMQ URL")] = DEFAULT_URL,
        exchange: Annotated[str, typer.Option(help="events exchange")] = DEFAULT_EXCHANGE,
        count: Annotated[int | None, typer.Option(help="exit after this many events")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    ) -> None:
        """Stream SipMesh events live (OpenSIPS names), pretty-printed."""

        async def run() -> None:
            task = asyncio.ensure_future(stream_events(
                names or [], url=url, exchange=exchange, count=count, as_json=as_json))
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                pass

        asyncio.run(run())
