"""`sipmesh events`: streams events from the real broker, pretty-printed or as JSON."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import aio_pika
import typer
from typer.testing import CliRunner

from shared.events.rabbitmq import RabbitMQEventBus
from shared.events.schema import EventCatalog
from sipmesh.cli import events_cmd as events_cli

AMQP = "amqp://guest:guest@127.0.0.1:5672/"


async def test_streams_only_the_named_events() -> None:
    exchange = f"test.cli.{uuid.uuid4().hex[:12]}"
    out = io.StringIO()
    ready = asyncio.Event()
    task = asyncio.create_task(events_cli.stream_events(
        ["E_UL_AOR_DELETE"], url=AMQP, exchange=exchange, count=2, out=out, ready=ready))
    bus = RabbitMQEventBus(EventCatalog.load(), url=AMQP, exchange=exchange,
                           service="registrar", node="reg-1", strict=True)
    try:
        async with asyncio.timeout(10):
            await ready.wait()
        await bus.start()
        bus.publish("E_UL_AOR_INSERT", {"aor": "skip@x"})
        bus.publish("E_UL_AOR_DELETE", {"aor": "first@x"})
        bus.publish("E_UL_AOR_DELETE", {"aor": "second@x"})
        async with asyncio.timeout(10):
            assert await task == 2
    finally:
        await bus.close()
        conn = await aio_pika.connect(AMQP)
        await (await conn.channel()).exchange_delete(exchange)
        await conn.close()
    text = out.getvalue()
    assert "skip@x" not in text
    assert text.index("first@x") < text.index("second@x")
    assert "E_UL_AOR_DELETE  (registrar/reg-1)" in text
    assert 'aor : "first@x"' in text


def test_json_format_and_command_registration() -> None:
    from shared.events.envelope import Event

    line = events_cli.format_event(Event("E_UL_AOR_INSERT", {"aor": "a@b"}, 1.5, "s", "n",
                                         "id1"), as_json=True)
    assert json.loads(line) == {"aor": "a@b", "_envelope": {
        "id": "id1", "event": "E_UL_AOR_INSERT", "time": 1.5, "service": "s", "node": "n"}}
    app = typer.Typer()
    events_cli.register(app)

    @app.command("other")
    def other() -> None:  # a second command so typer keeps "events" as a subcommand
        pass

    result = CliRunner().invoke(app, ["events", "--help"])
    assert result.exit_code == 0
    assert "Stream SipMesh events live" in result.output
