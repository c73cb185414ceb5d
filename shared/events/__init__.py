"""OpenSIPS-style events, the library side: the contracts catalog, the envelope, the
EventBus port and its backends (embedded forwarder, RabbitMQ publisher), the RabbitMQ
consumer, and JSON-RPC calls from routing scripts. Subscriptions and delivery to
subscriber sockets are the gateway's (:mod:`gateway.events`)."""
