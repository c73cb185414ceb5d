"""The registrar service: RFC 3261 §10 user location, subscribers (digest HA1), reached by
the edge over gRPC; OpenSIPS usrloc MI and events; optional full-sharing cluster."""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
