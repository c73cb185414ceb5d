"""The registrar service: RFC 3261 §10 user location, subscribers (digest HA1), reached by
the edge over gRPC; OpenSIPS usrloc MI and events; optional full-sharing cluster."""
