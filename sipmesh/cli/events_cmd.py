"""``sipmesh events [NAME...]``: stream events live, pretty-printed, in either mesh mode.

Each event is printed as one header line (time, event name, service/node) followed by its
parameters, one per line; ``--json`` prints one JSON object per line instead (for ``jq``).
``--count N`` exits after N events. Where the events come from follows ``[events]``:

* RabbitMQ mode (``rabbitmq_url`` set, or ``--rabbitmq URL``): a private queue (deleted when
  the command exits) is bound to the events exchange with one binding per argument: an
  event name ``E_X`` binds ``*.E_X``, a topic pattern over the ``<family>.<EVENT_NAME>``
  keys (``usrloc.#``) binds as given, nothing binds ``#``. The envelope says which service
  and node raised each event.
* embedded mode (default): the command becomes a subscriber like any other. It listens on
  an ephemeral TCP port on 127.0.0.1 and subscribes ``tcp:127.0.0.1:<port>`` through the
  gateway (``event_subscribe``, for every event of ``events_list`` that an argument names
  or matches, or all of them),
  refreshes the subscriptions while it runs and unsubscribes (expire 0) when it exits;
  should it be killed, they simply expire. Direct subscribers get the parameters only, so
  the header says ``(via gateway)`` where the envelope would name the node.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import signal
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, TextIO

import typer
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from shared.events.bus import topic_matches
from shared.events.envelope import ENVELOPE_KEY, Event
from shared.events.schema import EventCatalog
from shared.rpc import JsonRpcClient, RpcError, RpcTransportError
from sipmesh.cli.mesh_cmd import console

SUBSCRIBE_EXPIRE = 120  # seconds; refreshed at half-time while the command runs


def is_pattern(arg: str) -> bool:
    return any(c in arg for c in ".*#")


def bindings(args: Sequence[str]) -> list[str]:
    """RabbitMQ bindings for the command's arguments (see the module docstring)."""
    return [a if is_pattern(a) else f"*.{a}" for a in args] or ["#"]


def selected(args: Sequence[str], listed: Sequence[str], catalog: EventCatalog) -> list[str]:
    """The advertised events (``listed``) the arguments name or match, in listing order;
    a name not listed is kept (it may be raised later)."""
    if not args:
        return list(listed)
    names = [a for a in args if not is_pattern(a)]
    patterns = [a for a in args if is_pattern(a)]
    matched = [n for n in listed
               if any(topic_matches(p, catalog.routing_key(n)) for p in patterns)]
    return list(dict.fromkeys([*names, *matched]))


def format_event(event: Event, as_json: bool = False) -> str:
    if as_json:
        return json.dumps({**event.params, ENVELOPE_KEY: event.envelope()}, sort_keys=True)
    when = datetime.fromtimestamp(event.time, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]
    origin = f"{event.service}/{event.node}" if event.service else "via gateway"
    params = Table.grid(padding=(0, 1))  # name : value, the names' column lined up
    for name, value in event.params.items():
        params.add_row(Text(name), ":", Text(json.dumps(value)))
    out = io.StringIO()
    console(out).print(Text(f"{when} {event.name}  ({origin})"),
                       Padding(params, (0, 0, 0, 4), expand=False))
    return "\n".join(line.rstrip() for line in out.getvalue().splitlines())


class _Printer:
    """Prints events until ``count`` were printed; ``done`` is set then."""

    def __init__(self, count: int | None, as_json: bool, out: TextIO) -> None:
        self.count, self.as_json, self.out = count, as_json, out
        self.printed = 0
        self.done = asyncio.Event()

    async def __call__(self, event: Event) -> None:
        if self.count is not None and self.printed >= self.count:
            return
        print(format_event(event, self.as_json), file=self.out, flush=True)
        self.printed += 1
        if self.count is not None and self.printed >= self.count:
            self.done.set()


class GatewayError(Exception):
    """The gateway refused (exit code 1) or could not be reached (2); the message is for
    the user."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


async def _call(client: JsonRpcClient, method: str, params: Any) -> Any:
    try:
        return await client.call(method, params)
    except RpcError as exc:
        detail = f" ({exc.data})" if exc.data not in (None, "") else ""
        raise GatewayError(f"{method}: error {exc.code}: {exc.message}{detail}", 1) from exc
    except RpcTransportError as exc:
        raise GatewayError(f"gateway unreachable at {client.url}: {exc}", 2) from exc


async def stream_via_gateway(
    names: Sequence[str], *, gateway_url: str, token: str | None = None,
    count: int | None = None, as_json: bool = False, out: TextIO = sys.stdout,
    ready: asyncio.Event | None = None, expire: int = SUBSCRIBE_EXPIRE,
    host: str = "127.0.0.1", clock: Callable[[], float] = time.time,
) -> int:
    """Embedded mode (see the module docstring); returns how many events were printed."""
    show = _Printer(count, as_json, out)
    pending: list[Event] = []
    arrived = asyncio.Event()

    async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # event_stream delivery: one JSON-RPC notification per connection, then EOF.
        try:
            data = await asyncio.wait_for(reader.read(), 5.0)
        except (TimeoutError, OSError):
            data = b""
        finally:
            writer.close()
        try:
            msg = json.loads(data)
            name, params = msg["method"], msg.get("params") or {}
            if not isinstance(name, str) or not isinstance(params, dict):
                raise ValueError(name)
        except (ValueError, KeyError, TypeError):
            print(f"(unreadable notification: {data[:200]!r})", file=sys.stderr)
            return
        pending.append(Event(name, params, clock(), "", ""))
        arrived.set()

    server = await asyncio.start_server(on_connection, host, 0)
    port = server.sockets[0].getsockname()[1]
    socket = f"tcp:{host}:{port}"
    client = JsonRpcClient(gateway_url, token=token, timeout=10.0)
    subscribed: list[str] = []
    try:
        wanted = [n for n in names if not is_pattern(n)]
        if not wanted or len(wanted) < len(names):
            listing = await _call(client, "events_list", None)
            wanted = selected(names, [e["name"] for e in listing.get("Events", [])],
                              EventCatalog.load())
        for name in wanted:
            await _call(client, "event_subscribe", [name, socket, expire])
            subscribed.append(name)
        if ready is not None:
            ready.set()
        next_refresh = asyncio.get_running_loop().time() + expire / 2
        while not show.done.is_set():
            timeout = next_refresh - asyncio.get_running_loop().time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(arrived.wait(), max(timeout, 0))
            arrived.clear()
            while pending and not show.done.is_set():
                await show(pending.pop(0))
            if asyncio.get_running_loop().time() >= next_refresh:
                for name in subscribed:
                    await _call(client, "event_subscribe", [name, socket, expire])
                next_refresh = asyncio.get_running_loop().time() + expire / 2
    finally:
        server.close()
        for name in subscribed:
            with contextlib.suppress(GatewayError, asyncio.CancelledError):
                await _call(client, "event_subscribe", [name, socket, 0])
        await client.close()
    return show.printed


async def stream_events(
    names: Sequence[str], *, url: str, exchange: str, count: int | None = None,
    as_json: bool = False, out: TextIO = sys.stdout, ready: asyncio.Event | None = None,
) -> int:
    """RabbitMQ mode: print events until ``count`` were printed (or forever)."""
    # Imported here: aio_pika costs ~35 ms at every start of the `sipmesh` command
    # (`sipmesh up` included), and only this RabbitMQ-mode command needs it.
    from shared.events.consumer import RabbitMQEventConsumer

    show = _Printer(count, as_json, out)
    consumer = RabbitMQEventConsumer(show, url=url, exchange=exchange,
                                     patterns=bindings(names))
    await consumer.start()
    try:
        if ready is not None:
            await consumer.ready.wait()
            ready.set()
        await show.done.wait()
    finally:
        await consumer.close()
    return show.printed


def register(app: typer.Typer) -> None:
    @app.command("events")
    def events(
        names: Annotated[
            list[str] | None, typer.Argument(
                help="event names, or patterns over family.EVENT keys such as usrloc.# "
                     "(default: all events)")
        ] = None,
        url: Annotated[str, typer.Option(
            help="gateway MI URL, embedded mode (default: gateway config)")] = "",
        rabbitmq: Annotated[str, typer.Option(
            help="RabbitMQ URL: read the exchange directly (default: events.rabbitmq_url)")
        ] = "",
        exchange: Annotated[str, typer.Option(
            help="events exchange (default: events.exchange)")] = "",
        count: Annotated[int | None, typer.Option(help="exit after this many events")] = None,
        as_json: Annotated[bool, typer.Option("--json", help="one JSON object per line")] = False,
    ) -> None:
        """Stream SipMesh events live (OpenSIPS names), pretty-printed."""
        from gateway.config import GatewayConfig
        from shared.config import ConfigError, load_section
        from shared.events.config import EventsConfig

        try:
            ev = load_section(EventsConfig, "events")
            gw = load_section(GatewayConfig, "gateway")
        except ConfigError as exc:
            typer.echo(f"configuration error: {exc}", err=True)
            raise typer.Exit(2) from exc
        amqp = rabbitmq or ev.rabbitmq_url
        host = gw.host if gw.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        target = url or f"http://{host}:{gw.port}{gw.path}"

        async def run() -> None:
            if amqp:
                work = stream_events(names or [], url=amqp, exchange=exchange or ev.exchange,
                                     count=count, as_json=as_json)
            else:
                work = stream_via_gateway(names or [], gateway_url=target,
                                          token=gw.token or None, count=count,
                                          as_json=as_json)
            task = asyncio.ensure_future(work)
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, task.cancel)
            try:
                await task
            except asyncio.CancelledError:
                pass

        try:
            asyncio.run(run())
        except GatewayError as exc:
            typer.echo(str(exc), err=True)
            raise typer.Exit(exc.exit_code) from exc
