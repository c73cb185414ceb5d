"""OpenSIPS-style events: contracts, the EventBus port, backends, subscriptions, MI."""
