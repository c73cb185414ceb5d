"""What the transaction layer asks of its surroundings.

Every call into the layer returns a list of these small frozen events (hypercorn style):
`Transmit` is work for the transport adapter (send these bytes there), the others are for
the transaction user (the proxy core).  `destination` is opaque to the layer: the TU hands
it in when a transaction is created and gets it back untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.sip import Response
    from shared.transaction.transaction import ClientTransaction, ServerTransaction


@dataclass(frozen=True, slots=True)
class Transmit:
    """Send `data` to `destination`; `retransmission` tells metrics and logs apart.

    `transaction` is the one sending: when the transport refuses this very send, the TU
    reports it with `TransactionLayer.transport_error(transaction, now)` (§17.1.4), which
    fails that transaction and no other."""

    data: bytes
    destination: Any
    retransmission: bool = False
    transaction: ClientTransaction | ServerTransaction | None = field(
        default=None, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    """A response that a client transaction passes up (§17.1.1.2, §17.1.2.2)."""

    transaction: ClientTransaction
    response: Response


@dataclass(frozen=True, slots=True)
class TimedOut:
    """Timer B, F or H fired: the TU treats it as a 408 (§16.7 step 2) or gives up."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class TransportFailed:
    """The transport reported a failure for this transaction (§17.1.4, §17.2.4)."""

    transaction: ClientTransaction | ServerTransaction


@dataclass(frozen=True, slots=True)
class Terminated:
    """The transaction reached Terminated and has been forgotten by the layer."""

    transaction: ClientTransaction | ServerTransaction


TransactionEvent = Transmit | ResponseReceived | TimedOut | TransportFailed | Terminated
