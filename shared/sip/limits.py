"""How much one message may ask of a parser (and of the proxy that acts on it).

A datagram of 64 KB can hold thousands of header lines or Route values; each one costs the
proxy parsing, copying and, for routing headers, work per forwarded branch.  No legitimate
message comes near these bounds (Max-Forwards alone limits a request to 70 hops, so to
about as many Via values), so a message beyond them is refused whole with 513 Message Too
Large (RFC 3261 §21.5.7: "the message length exceeded its capabilities"), or dropped when
it is a response.  `parse_message` checks the field count, `Message.validate` the values
(counted before they are parsed, so a 64 KB list costs one split, not thousands of parses).
"""

from __future__ import annotations

from typing import Final

MAX_HEADER_LINES: Final = 256
# Values of one routing header (Via, Route, Record-Route) in one message.
MAX_ROUTING_VALUES: Final = 128
ROUTING_HEADERS: Final = frozenset({"via", "route", "record-route"})
# Contact values (a registrar's 200 lists every binding of an AOR: a higher bound).
MAX_CONTACT_VALUES: Final = 256
