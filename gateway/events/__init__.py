"""The gateway's side of the OpenSIPS event interface.

Processes raise events through their runtime's bus (:mod:`shared.events`, a library);
the gateway is where they end up for direct subscribers:

* :mod:`.service` -- :class:`GatewayEvents` wires it all into the gateway's runtime, and
  :class:`EventFeed` hands events over in order, without duplicates;
* :mod:`.subscriptions` -- the subscription manager (OpenSIPS ``event_subscribe``
  semantics), kept in :mod:`.store` (SQLite or PostgreSQL);
* :mod:`.sockets` -- subscriber socket strings (``udp:``, ``tcp:``, ``jsonrpc:``,
  ``rabbitmq:``) and :mod:`.transports` -- delivery in each module's wire format;
* :mod:`.mi` -- ``event_subscribe``, ``events_list``, ``subscribers_list``.
"""

from gateway.events.service import EVENT_COMMANDS, EventFeed, GatewayEvents, open_store

__all__ = ["EVENT_COMMANDS", "EventFeed", "GatewayEvents", "open_store"]
