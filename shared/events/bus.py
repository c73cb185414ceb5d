"""The event bus port, and the buffered publisher both backends share.

``EventBus`` is what a service holds. ``publish(name, params)`` is a plain (non-async)
call: it validates the payload against the event's contract, wraps it in an envelope and
appends it to a bounded in-memory buffer, then returns at once. A drain task delivers the
buffer to the backend in order, by default one event at a time, and only removes an event
after the backend accepted it (RabbitMQ: after the broker's publisher confirm). So:

- the caller (the SIP hot path) never waits for the broker and never sees it fail;
- while the backend is away, events wait in the buffer; when the buffer is full the *new*
  event is refused and counted as dropped (``overflow``), so what is kept is a contiguous,
  ordered prefix that is delivered once the backend is back;
- delivery is at least once: an event whose confirm was lost with the connection is sent
  again, and consumers drop duplicates by the envelope id.

``max_in_flight`` (default 1) lets the drain loop send that many events at once on the
one channel and wait for all their confirms, instead of a broker round trip per event
(here: 7,000 instead of 4,500 confirmed events/s, tests/bench/bench_events.py). The
cost: if the broker refuses or times out one event while confirming a later one of the
same batch (a nack of a single message, not an outage - an outage fails the rest of the
batch too), the later one reaches consumers before the resend of the earlier one. With
the default the order is strict.

After delivery each local listener (``add_listener(cb, pattern)``, AMQP topic pattern where
``*`` is one word and ``#`` zero or more, matched against the event's routing key
``<family>.<EVENT_NAME>`` as a RabbitMQ binding would be) is called with the event, in
order. The embedded backend *is* just that: in-process delivery to listeners (the gateway's
subscription manager in ``make run``).
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    wait_random_exponential,
)

from shared.events.envelope import Event, EventIds
from shared.events.schema import EventCatalog, EventValidationError

EventListener = Callable[[Event], Awaitable[None]]
Clock = Callable[[], float]

log = structlog.get_logger(__name__)


class EventBus(Protocol):
    """What a service needs to raise events."""

    @property
    def catalog(self) -> EventCatalog: ...

    @property
    def stats(self) -> BusStats: ...

    async def start(self) -> None: ...

    async def close(self, drain_timeout: float = 5.0) -> None: ...

    def publish(self, event: str, params: Mapping[str, Any]) -> Event | None:
        """Queue an event; never blocks. ``None`` when it was dropped (invalid/overflow)."""
        ...

    async def flush(self, timeout: float) -> bool:
        """Wait until everything published so far was delivered; False on timeout."""
        ...

    def add_listener(self, listener: EventListener, pattern: str = "#") -> None: ...


@dataclass(slots=True)
class BusStats:
    published: int = 0  # accepted into the buffer
    delivered: int = 0  # accepted by the backend
    dropped_overflow: int = 0
    dropped_invalid: int = 0
    delivery_failures: int = 0  # failed attempts (each followed by a backoff)

    @property
    def dropped(self) -> int:
        return self.dropped_overflow + self.dropped_invalid


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic matching: words split on '.', '*' is exactly one word, '#' zero or more."""
    return _match(pattern.split("."), key.split("."))


def _match(pat: list[str], words: list[str]) -> bool:
    if not pat:
        return not words
    head, rest = pat[0], pat[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head in ("*", words[0])) and _match(rest, words[1:])


class DeliveryFailed(ConnectionError):
    """The backend did not take the head of the buffer (the cause says why)."""


def _being_cancelled() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class BufferedEventBus:
    """Validation, envelope, bounded buffer, ordered drain, backoff. Backends add ``_deliver``."""

    backend = "abstract"

    def __init__(
        self,
        catalog: EventCatalog,
        *,
        service: str,
        node: str,
        buffer_size: int = 10_000,
        strict: bool = False,
        clock: Clock = time.time,
        backoff_initial: float = 0.1,
        backoff_max: float = 5.0,
        max_in_flight: int = 1,
        registry: CollectorRegistry | None = None,
    ) -> None:
        if buffer_size < 1:
            raise ValueError("buffer_size must be at least 1")
        if max_in_flight < 1:
            raise ValueError("max_in_flight must be at least 1")
        self.max_in_flight = max_in_flight
        self._catalog = catalog
        self.service = service
        self.node = node
        self.buffer_size = buffer_size
        self.strict = strict
        self._clock = clock
        self._backoff_initial = backoff_initial
        self._backoff_max = backoff_max
        self._buffer: collections.deque[Event] = collections.deque()
        self._listeners: list[tuple[str, EventListener]] = []
        self._stats = BusStats()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        # Metrics go to the registry the process wires in (no global default registry).
        self.registry = registry if registry is not None else CollectorRegistry()
        self._m_published = Counter(
            "sipmesh_events_published", "Events accepted for publishing", ["event"],
            registry=self.registry,
        )
        self._m_dropped = Counter(
            "sipmesh_events_dropped", "Events dropped before delivery", ["reason"],
            registry=self.registry,
        )
        self._m_delivered = Counter(
            "sipmesh_events_delivered", "Events accepted by the backend", ["backend"],
            registry=self.registry,
        )
        self._m_buffered = Gauge(
            "sipmesh_events_buffered", "Events waiting for delivery", registry=self.registry
        )
        self._m_buffered.set_function(lambda: len(self._buffer))
        # Label children resolved once: labels() per call costs more than the increment.
        self._m_published_by: dict[str, Any] = {}
        self._m_dropped_by: dict[str, Any] = {}
        self._m_delivered_here = self._m_delivered.labels(self.backend)
        self._next_id = EventIds()

    # -- the port -----------------------------------------------------------------------
    @property
    def catalog(self) -> EventCatalog:
        return self._catalog

    @property
    def stats(self) -> BusStats:
        return self._stats

    @property
    def buffered(self) -> int:
        return len(self._buffer)

    def add_listener(self, listener: EventListener, pattern: str = "#") -> None:
        self._listeners.append((pattern, listener))

    def publish(self, event: str, params: Mapping[str, Any]) -> Event | None:
        try:
            self._catalog.validate(event, params)
        except EventValidationError as exc:
            if self.strict:
                raise
            self._stats.dropped_invalid += 1
            self._count_dropped("invalid")
            log.warning("event_invalid_dropped", event_name=event, error=exc.message)
            return None
        if len(self._buffer) >= self.buffer_size:
            self._stats.dropped_overflow += 1
            self._count_dropped("overflow")
            return None
        ev = Event(
            name=event, params=dict(params), time=self._clock(),
            service=self.service, node=self.node, id=self._next_id(),
        )
        self._buffer.append(ev)
        self._stats.published += 1
        counter = self._m_published_by.get(event)
        if counter is None:  # a catalog name (validated above): a bounded set of children
            counter = self._m_published_by[event] = self._m_published.labels(event)
        counter.inc()
        self._idle.clear()
        self._wakeup.set()
        return ev

    def _count_dropped(self, reason: str) -> None:
        counter = self._m_dropped_by.get(reason)
        if counter is None:
            counter = self._m_dropped_by[reason] = self._m_dropped.labels(reason)
        counter.inc()

    async def start(self) -> None:
        if self._task is None:
            self._closing = False
            self._task = asyncio.get_running_loop().create_task(
                self._drain(), name=f"events-drain-{self.backend}"
            )

    async def flush(self, timeout: float) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self._idle.wait()
            return True
        except TimeoutError:
            return False

    async def close(self, drain_timeout: float = 5.0) -> None:
        if self._task is not None:
            if self._buffer and not await self.flush(drain_timeout):
                log.warning("events_lost_on_close", buffered=len(self._buffer))
            self._closing = True
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        await self._close_backend()

    # -- backend hooks ------------------------------------------------------------------
    async def _deliver(self, event: Event) -> None:
        raise NotImplementedError

    async def _prepare(self) -> None:
        """Make sure the backend is connected before a batch is sent concurrently."""

    async def _reset_backend(self) -> None:
        """Forget a broken connection so the next ``_deliver`` makes a new one."""

    async def _close_backend(self) -> None:
        """Release the backend's resources."""

    # -- the drain loop -----------------------------------------------------------------
    def _retrying(self) -> AsyncRetrying:
        """Retry the head of the buffer until the backend takes it: forever, waiting a
        random time up to an exponential bound (full jitter, so that many nodes do not
        reconnect in lockstep); a fresh one per batch, so a success resets the bound."""
        return AsyncRetrying(
            wait=wait_random_exponential(multiplier=self._backoff_initial,
                                         max=self._backoff_max),
            retry=retry_if_exception_type(DeliveryFailed),
            before_sleep=self._failed, reraise=True)

    async def _failed(self, state: RetryCallState) -> None:
        self._stats.delivery_failures += 1
        error = state.outcome.exception() if state.outcome is not None else None
        cause = error.__cause__ if error is not None and error.__cause__ else error
        log.warning(
            "event_delivery_failed", backend=self.backend, error=repr(cause),
            buffered=len(self._buffer),
            retry_in=round(state.next_action.sleep, 3) if state.next_action else None,
        )
        await self._reset_backend()

    async def _drain(self) -> None:
        while True:
            if not self._buffer:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            async for attempt in self._retrying():
                with attempt:
                    await self._send_head()

    async def _send_head(self) -> None:
        """Sends up to ``max_in_flight`` events from the head of the buffer, in order, on
        one channel; the confirmed prefix leaves the buffer, DeliveryFailed if not all did."""
        batch = list(itertools.islice(self._buffer, self.max_in_flight))
        error: BaseException | None = None
        try:
            await self._prepare()
            if len(batch) == 1:
                results: list[BaseException | None] = [None]
                await self._deliver(batch[0])
            else:
                results = list(await asyncio.gather(
                    *(self._deliver(e) for e in batch), return_exceptions=True))
        except asyncio.CancelledError as exc:
            if _being_cancelled():
                raise
            # aio-pika cancels pending confirms when the connection drops: a failure.
            results, error = [exc], exc
        except Exception as exc:
            results, error = [exc], exc
        # Only the confirmed prefix leaves the buffer; the rest is sent again (a later
        # event already confirmed becomes a duplicate that consumers drop by id).
        done = 0
        for result in results:
            if isinstance(result, BaseException):
                error = error or result
                break
            done += 1
        for _ in range(done):
            event = self._buffer.popleft()
            self._stats.delivered += 1
            self._m_delivered_here.inc()
            await self._notify(event)
        if error is not None:
            raise DeliveryFailed(str(error)) from error

    async def _notify(self, event: Event) -> None:
        for pattern, listener in self._listeners:
            if pattern == "#" or topic_matches(pattern, self._catalog.routing_key(event.name)):
                try:
                    await listener(event)
                except Exception as exc:  # a bad listener must not stop the bus
                    log.exception("event_listener_failed", event_name=event.name, error=repr(exc))


class EmbeddedEventBus(BufferedEventBus):
    """In-process delivery: every event goes to the local listeners (``make run`` default)."""

    backend = "embedded"

    async def _deliver(self, event: Event) -> None:
        return None
