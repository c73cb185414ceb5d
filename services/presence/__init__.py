"""The presence service: PUBLISH (RFC 3903), SUBSCRIBE/NOTIFY (RFC 6665) for the
`presence` event package (RFC 3856, PIDF RFC 3863), as OpenSIPS's `presence` module."""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
