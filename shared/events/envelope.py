"""An event as it travels: the OpenSIPS parameters plus an envelope.

The envelope says which event this is (a unique id, so a consumer can drop a duplicate after
an at-least-once redelivery), when it was raised (unix time, float seconds), and which
service and node raised it. Ids need only be unique, never secret: a bus numbers its events
with :class:`EventIds` (a random per-process prefix and a counter, the same 32 hex digits
as a uuid4 but without a call into the OS's random source per event); an event made
elsewhere gets a uuid4. On RabbitMQ the body is the JSON object of the parameters with
the envelope under the reserved key ``_envelope``, so consumers that read parameters by name
(billing reading E_ACC_CDR) are not disturbed by it. Direct subscribers (udp:, tcp:,
jsonrpc:, rabbitmq: sockets) get the parameters only, exactly as from OpenSIPS.
"""

from __future__ import annotations

import itertools
import json
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ENVELOPE_KEY = "_envelope"


class EventIds:
    """Unique event ids for one publisher: 16 random hex digits drawn once, then a counter
    (16 hex digits).  Two publishers share an id only if their 64 random bits collide; a
    forked child draws a new prefix (its counter would repeat the parent's)."""

    def __init__(self) -> None:
        self._reseed()

    def _reseed(self) -> None:
        self._pid = os.getpid()
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count()

    def __call__(self) -> str:
        if os.getpid() != self._pid:
            self._reseed()
        return f"{self._prefix}{next(self._counter):016x}"


@dataclass(frozen=True, slots=True)
class Event:
    name: str
    params: Mapping[str, Any]
    time: float
    service: str
    node: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def envelope(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "event": self.name,
            "time": self.time,
            "service": self.service,
            "node": self.node,
        }

    def to_body(self) -> bytes:
        """The RabbitMQ body: parameters plus the envelope."""
        body = dict(self.params)
        body[ENVELOPE_KEY] = self.envelope()
        return json.dumps(body, separators=(",", ":")).encode()

    @classmethod
    def from_body(cls, body: bytes | str, routing_key: str | None = None) -> Event:
        """Parse a RabbitMQ body written by :meth:`to_body` (for consumers and tests); the
        routing key (``<family>.<EVENT_NAME>``) names the event when the envelope does not."""
        data = json.loads(body)
        if not isinstance(data, dict):
            raise ValueError("event body is not a JSON object")
        env = data.pop(ENVELOPE_KEY, None) or {}
        return cls(
            name=str(env.get("event") or (routing_key or "").rpartition(".")[2]),
            params=data,
            time=float(env.get("time", 0.0)),
            service=str(env.get("service", "")),
            node=str(env.get("node", "")),
            id=str(env.get("id") or uuid.uuid4().hex),
        )
