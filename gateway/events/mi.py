"""MI commands of the event interface, as OpenSIPS names and shapes them.

- ``event_subscribe event socket [expire]`` -> ``"OK"`` (expire defaults to 3600 s; 0
  unsubscribes). The ``opensips`` package's event handler checks for exactly ``"OK"``.
- ``events_list`` -> ``{"Events": [{"name": ..., "id": ...}, ...]}``: the events some
  running service can raise (``advertised``: the services declare them in their
  registration), not every contract -- a CDR event is listed once an accounting service
  runs. The id is the event's place in the contracts, so it never changes.
- ``subscribers_list [event [socket]]`` -> with no argument every advertised or subscribed
  event with its ``"Subscribers"`` array; with an event that one event object; with event
  and socket that one subscriber ``{"socket": ..., "expire": seconds left | "never"}``.

``event_subscribe`` accepts every event of the contracts, advertised or not: a consumer
may subscribe before the service that raises the event has started.

Values may arrive as strings (opensips-cli sends everything as text), so ``expire`` is
accepted as an integer or a decimal string. Bad input becomes an :class:`MiError` with
a message that says what is wrong (400 bad parameter, 404 unknown event or subscriber).
``mi_commands(manager, advertised)`` returns the three commands ready for an
``MiDispatcher``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from gateway.events.sockets import SocketSyntaxError, display
from gateway.events.subscriptions import (
    DEFAULT_EXPIRE,
    Subscription,
    SubscriptionManager,
    UnknownEventError,
)
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiCommand, MiError


def _expire(value: Any) -> int:
    if isinstance(value, bool):
        raise MiError(BAD_REQUEST, "Bad parameter", "expire must be a non-negative integer")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and value >= 0:
        return value
    raise MiError(BAD_REQUEST, "Bad parameter", f"expire must be a non-negative integer, "
                  f"not {value!r}")


def _text(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise MiError(BAD_REQUEST, "Bad parameter", f"{name} must be a non-empty string")
    return value


def _subscriber(sub: Subscription, now: float) -> dict[str, Any]:
    left = sub.remaining(now)
    return {"socket": display(sub.socket), "expire": "never" if left is None else left}


async def event_subscribe(
    manager: SubscriptionManager, event: Any, socket: Any, expire: Any = DEFAULT_EXPIRE
) -> str:
    try:
        await manager.subscribe(_text("event", event), _text("socket", socket), _expire(expire))
    except UnknownEventError as exc:
        raise MiError(NOT_FOUND, "Unknown event", exc.event) from exc
    except SocketSyntaxError as exc:
        raise MiError(BAD_REQUEST, "Bad socket", str(exc)) from exc
    return "OK"


Advertised = Callable[[], Awaitable[Iterable[str]]]


async def events_list(manager: SubscriptionManager,
                      advertised: Advertised | None = None) -> dict[str, Any]:
    names = manager.events()
    shown = set(await advertised()) if advertised is not None else set(names)
    ids = manager.catalog.event_id
    return {"Events": [{"name": n, "id": ids(n)} for n in names if n in shown]}


async def subscribers_list(
    manager: SubscriptionManager, event: Any = None, socket: Any = None,
    advertised: Advertised | None = None,
) -> dict[str, Any]:
    now = manager.now()
    names = manager.events()
    ids = manager.catalog.event_id
    try:
        if event is None:
            subs = manager.subscribers()
            shown = set(await advertised()) if advertised is not None else set(names)
            shown |= {s.event for s in subs}
            return {"Events": [
                {"name": n, "id": ids(n),
                 "Subscribers": [_subscriber(s, now) for s in subs if s.event == n]}
                for n in names if n in shown
            ]}
        ev = _text("event", event)
        if socket is None:
            subs = manager.subscribers(ev)
            return {"name": ev, "id": ids(ev),
                    "Subscribers": [_subscriber(s, now) for s in subs]}
        found = manager.subscribers(ev, _text("socket", socket))
    except UnknownEventError as exc:
        raise MiError(NOT_FOUND, "Unknown event", exc.event) from exc
    except SocketSyntaxError as exc:
        raise MiError(BAD_REQUEST, "Bad socket", str(exc)) from exc
    if not found:
        raise MiError(NOT_FOUND, "Subscriber not found", f"{socket} is not subscribed to {ev}")
    return _subscriber(found[0], now)


def mi_commands(manager: SubscriptionManager,
                advertised: Advertised | None = None) -> list[MiCommand]:
    """The three commands bound to ``manager``, for ``MiDispatcher.add``; ``advertised``
    answers which events running services can raise (None: every contract)."""

    async def _subscribe(**kw: Any) -> str:
        return await event_subscribe(manager, **kw)

    async def _events(**kw: Any) -> dict[str, Any]:
        return await events_list(manager, advertised, **kw)

    async def _subscribers(**kw: Any) -> dict[str, Any]:
        return await subscribers_list(manager, advertised=advertised, **kw)

    return [
        MiCommand("event_subscribe", _subscribe,
                  (("event", "socket"), ("event", "socket", "expire")),
                  "subscribe a socket to an event; expire 0 unsubscribes"),
        MiCommand("events_list", _events, ((),),
                  "list the events the running services can raise"),
        MiCommand("subscribers_list", _subscribers, ((), ("event",), ("event", "socket")),
                  "list event subscribers"),
    ]
