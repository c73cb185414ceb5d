"""SIPREC recording client (RFC 7866/7865): calls recorded to a Session Recording Server.

Sans-IO: `body.py` (the multipart offer, SDP labels), `metadata.py` (RFC 7865 XML),
`session.py` (the recording sessions' state table, the requests to the SRS, failover).
asyncio: `clients.py` (media broker, edges' Uac API), `recorder.py`, `app.py`.
"""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
