"""The ``[events]`` configuration section: which bus backend, where subscriptions live.

Every field has an embedded default, so ``make run`` needs no RabbitMQ:

* ``rabbitmq_url`` empty (default): *embedded mode*. A service's bus forwards each event to
  the gateway found in discovery over the internal JSON-RPC method ``event_ingest``
  (:mod:`shared.events.forward`); the gateway hands it to its subscription manager.
* ``rabbitmq_url`` set (e.g. ``amqp://guest:guest@127.0.0.1:5672/``): *RabbitMQ mode*.
  Services publish to the durable topic exchange ``exchange``; the gateway consumes it
  (:mod:`shared.events.consumer`) and delivers to the direct subscribers.

``consumer_queue`` is the gateway's queue on the exchange (RabbitMQ mode). Empty
(default): a durable queue of this gateway's own, ``<exchange>.gateway.<host
name>-<port>`` (the host and the MI port name one gateway instance: a restarted process
or container finds its queue again, with the events published while it was away); for a
gateway on an ephemeral port (``port = 0``, nothing names it across restarts) a private
queue deleted with its connection. A name: that durable queue, and the way to run
gateway replicas: every replica of one gateway group names the same queue and they
consume it as competing consumers (RabbitMQ gives each event to one replica, so each
subscriber gets it once, and what a dead replica held unacknowledged to another), with
the subscriptions shared through a PostgreSQL ``store`` that each replica follows
(``subscription_refresh``; :mod:`gateway.events.store`). Two replicas with queues of their
own would each deliver every event (twice to a subscription both know); replicas on one
queue with SQLite stores would each know only their own subscriptions. A named queue is
bounded (:func:`queue_arguments`):
RabbitMQ deletes it once nobody consumed it for ``consumer_queue_expires`` s (an
abandoned replica's queue goes away; 0 = never) and it holds at most
``consumer_queue_max_length`` events (0 = unbounded), beyond which ``drop-head`` drops
the oldest (default) or ``reject-publish`` refuses new ones (every publisher then holds
its events in its buffer until the gateway catches up: no loss, but no other consumer
of the exchange gets them meanwhile either).

``store`` is where the gateway keeps subscriptions across restarts: a file path for SQLite
(default ``$XDG_STATE_HOME/sipmesh/event_subscribers.sqlite``) or a ``postgresql://`` DSN.
``exec_threshold`` (microseconds, 0 = off) is OpenSIPS's ``exec_msg_threshold``: work
that takes longer raises ``E_CORE_THRESHOLD``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from shared.config import ConfigError

# Here rather than in shared.events.rabbitmq (which takes it from here): every process reads
# this section, and importing aio_pika costs ~35 ms of CPU that only RabbitMQ mode needs.
DEFAULT_EXCHANGE = "sipmesh.events"

OVERFLOWS = ("drop-head", "reject-publish")


def queue_arguments(*, expires: float, max_length: int, overflow: str) -> dict[str, Any]:
    """A named queue's bounds as RabbitMQ queue arguments: ``x-expires`` (ms; the queue
    is deleted once unused - no consumer, no redeclaration - that long), ``x-max-length``
    (messages held at most) with ``x-overflow`` saying what happens beyond it
    (``drop-head``: the oldest are dropped; ``reject-publish``: publishes are refused, so
    the publishers' buffers hold the events). ``0`` leaves a bound out."""
    if overflow not in OVERFLOWS:
        raise ValueError(f"overflow must be one of {', '.join(OVERFLOWS)}, not {overflow!r}")
    arguments: dict[str, Any] = {}
    if expires > 0:
        arguments["x-expires"] = max(1, round(expires * 1000))
    if max_length > 0:
        arguments["x-max-length"] = max_length
        arguments["x-overflow"] = overflow
    return arguments


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    rabbitmq_url: str = ""
    exchange: str = DEFAULT_EXCHANGE
    buffer_size: int = 10_000
    strict: bool = False
    # the gateway side
    store: str = ""
    consumer_queue: str = ""  # empty: durable, named after this gateway (host, port)
    consumer_queue_expires: float = 3600.0  # s unused before RabbitMQ deletes it; 0 = never
    consumer_queue_max_length: int = 100_000  # events held at most; 0 = unbounded
    consumer_queue_overflow: str = "drop-head"  # or reject-publish
    subscriber_timeout: float = 1.0
    purge_interval: float = 60.0
    # s between whole reads of a shared (PostgreSQL) store, besides each notified change
    subscription_refresh: float = 30.0
    # the forwarding side (embedded mode)
    gateway_service: str = "gateway"
    gateway_token: str = ""
    forward_timeout: float = 2.0
    # core events
    exec_threshold: int = 0

    def __post_init__(self) -> None:
        if self.buffer_size < 1:
            raise ConfigError(f"[events].buffer_size must be at least 1, not {self.buffer_size}")
        if self.exec_threshold < 0:
            raise ConfigError("[events].exec_threshold must be >= 0 (microseconds; 0 = off)")
        for name in ("subscriber_timeout", "purge_interval", "forward_timeout",
                     "subscription_refresh"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[events].{name} must be a positive number of seconds")
        if self.consumer_queue_expires < 0 or self.consumer_queue_max_length < 0:
            raise ConfigError("[events].consumer_queue_expires and consumer_queue_max_length "
                              "must be >= 0 (0 = no bound)")
        if self.consumer_queue_overflow not in OVERFLOWS:
            raise ConfigError(f"[events].consumer_queue_overflow must be one of "
                              f"{', '.join(OVERFLOWS)}, not {self.consumer_queue_overflow!r}")
        if self.consumer_queue.startswith("amq."):
            raise ConfigError("[events].consumer_queue: names starting amq. are RabbitMQ's")
        if self.rabbitmq_url and not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"[events].rabbitmq_url must be an amqp:// URL, not "
                              f"{self.rabbitmq_url!r}")

    @property
    def rabbitmq(self) -> bool:
        return bool(self.rabbitmq_url)

    def gateway_queue(self, hostname: str, port: int) -> str | None:
        """The gateway's queue name, or None for a private one (see the module docstring)."""
        if self.consumer_queue:
            return self.consumer_queue
        if port == 0:
            return None
        return f"{self.exchange}.gateway.{hostname}-{port}"

    def queue_arguments(self) -> dict[str, object]:
        """The RabbitMQ arguments bounding a named gateway queue."""
        return queue_arguments(expires=self.consumer_queue_expires,
                               max_length=self.consumer_queue_max_length,
                               overflow=self.consumer_queue_overflow)

    def store_location(self) -> str:
        """The configured store, or the default SQLite file (its directory created)."""
        if self.store:
            return self.store
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        path = base / "sipmesh" / "event_subscribers.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)
