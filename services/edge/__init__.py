"""The edge proxy: an RFC 3261 stateful proxy over UDP and TCP with a Python routing API.

`core.py` is the sans-IO proxy (§16), `shared.transaction` the transactions (§17),
`transports.py` and `app.py` the asyncio side, `routing.py` the routing API and
`default_routing.py` the routing module used when none is configured.
"""

__version__ = "0.2.0"  # this service's own release (docs/adr/0002-versioning.md)
