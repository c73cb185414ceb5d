"""The media broker: rtpengine sets, per-call instance choice and the ng protocol
(see app.py for the process, broker.py for the asyncio side, ng/flags/sets/stats for the
sans-IO decisions)."""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
