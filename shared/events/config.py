"""The ``[events]`` configuration section: which bus backend, where subscriptions live.

Every field has an embedded default, so ``make run`` needs no RabbitMQ:

* ``rabbitmq_url`` empty (default): *embedded mode*. A service's bus forwards each event to
  the gateway found in discovery over the internal JSON-RPC method ``event_ingest``
  (:mod:`shared.events.forward`); the gateway hands it to its subscription manager.
* ``rabbitmq_url`` set (e.g. ``amqp://guest:guest@127.0.0.1:5672/``): *RabbitMQ mode*.
  Services publish to the durable topic exchange ``exchange``; the gateway consumes it
  (:mod:`shared.events.consumer`) and delivers to the direct subscribers.

``store`` is where the gateway keeps subscriptions across restarts: a file path for SQLite
(default ``$XDG_STATE_HOME/sipmesh/event_subscribers.sqlite``) or a ``postgresql://`` DSN.
``exec_threshold`` (microseconds, 0 = off) is OpenSIPS's ``exec_msg_threshold``: work
that takes longer raises ``E_CORE_THRESHOLD``.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from shared.config import ConfigError

# Here rather than in shared.events.rabbitmq (which takes it from here): every process reads
# this section, and importing aio_pika costs ~35 ms of CPU that only RabbitMQ mode needs.
DEFAULT_EXCHANGE = "sipmesh.events"


@dataclasses.dataclass(frozen=True)
class EventsConfig:
    rabbitmq_url: str = ""
    exchange: str = DEFAULT_EXCHANGE
    buffer_size: int = 10_000
    strict: bool = False
    # the gateway side
    store: str = ""
    consumer_queue: str = ""  # empty: a private queue; a name: durable, survives restarts
    subscriber_timeout: float = 1.0
    purge_interval: float = 60.0
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
        for name in ("subscriber_timeout", "purge_interval", "forward_timeout"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"[events].{name} must be a positive number of seconds")
        if self.rabbitmq_url and not self.rabbitmq_url.startswith(("amqp://", "amqps://")):
            raise ConfigError(f"[events].rabbitmq_url must be an amqp:// URL, not "
                              f"{self.rabbitmq_url!r}")

    @property
    def rabbitmq(self) -> bool:
        return bool(self.rabbitmq_url)

    def store_location(self) -> str:
        """The configured store, or the default SQLite file (its directory created)."""
        if self.store:
            return self.store
        base = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
        path = base / "sipmesh" / "event_subscribers.sqlite"
        path.parent.mkdir(parents=True, exist_ok=True)
        return str(path)
