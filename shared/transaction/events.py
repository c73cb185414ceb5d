"""What the transaction layer asks of its surroundings.

Every call into the layer returns a list of these small events (hypercorn style):
`Transmit` is work for the transport adapter (send these bytes there), the others are for
the transaction user (the proxy core).  `destination` is opaque to the layer: the TU hands
it in when a transaction is created and gets it back untouched.

Plain classes with an explicit `__init__`, not frozen dataclasses: a frozen dataclass's
generated `__init__` is interpreted Python that sets each field with `object.__setattr__`
(compiled or not), and a stateful call creates about a dozen of these.  Compiled with mypyc
(shared/compiled.py) they are native classes.  Nothing mutates an event once made.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.sip import Response
    from shared.transaction.transaction import ClientTransaction, ServerTransaction


class Transmit:
    """Send `data` to `destination`; `retransmission` tells metrics and logs apart.

    `transaction` is the one sending: when the transport refuses this very send, the TU
    reports it with `TransactionLayer.transport_error(transaction, now)` (§17.1.4), which
    fails that transaction and no other."""

    __slots__ = ("data", "destination", "retransmission", "transaction")

    def __init__(self, data: bytes, destination: Any, retransmission: bool = False,
                 transaction: ClientTransaction | ServerTransaction | None = None) -> None:
        self.data = data
        self.destination = destination
        self.retransmission = retransmission
        self.transaction = transaction

    def __repr__(self) -> str:
        return (f"Transmit(data={self.data!r}, destination={self.destination!r}, "
                f"retransmission={self.retransmission!r})")


class ResponseReceived:
    """A response that a client transaction passes up (§17.1.1.2, §17.1.2.2)."""

    __slots__ = ("response", "transaction")

    def __init__(self, transaction: ClientTransaction, response: Response) -> None:
        self.transaction = transaction
        self.response = response

    def __repr__(self) -> str:
        return f"ResponseReceived(transaction={self.transaction!r}, response={self.response!r})"


class TimedOut:
    """Timer B, F or H fired: the TU treats it as a 408 (§16.7 step 2) or gives up."""

    __slots__ = ("transaction",)

    def __init__(self, transaction: ClientTransaction | ServerTransaction) -> None:
        self.transaction = transaction

    def __repr__(self) -> str:
        return f"TimedOut(transaction={self.transaction!r})"


class TransportFailed:
    """The transport reported a failure for this transaction (§17.1.4, §17.2.4)."""

    __slots__ = ("transaction",)

    def __init__(self, transaction: ClientTransaction | ServerTransaction) -> None:
        self.transaction = transaction

    def __repr__(self) -> str:
        return f"TransportFailed(transaction={self.transaction!r})"


class Terminated:
    """The transaction reached Terminated and has been forgotten by the layer."""

    __slots__ = ("transaction",)

    def __init__(self, transaction: ClientTransaction | ServerTransaction) -> None:
        self.transaction = transaction

    def __repr__(self) -> str:
        return f"Terminated(transaction={self.transaction!r})"


TransactionEvent = Transmit | ResponseReceived | TimedOut | TransportFailed | Terminated
