"""PIDF documents (RFC 3863) and their aggregation (RFC 3903 §4, RFC 3856 §6.6.1).

Sans-IO. A published body is checked before it is stored: well-formed XML whose root is
`<presence>` in the PIDF namespace with an `entity` (RFC 3863 §4.1.1), without a DTD (no
entity expansion: an XML bomb is refused, not parsed). The state of a presentity is the
composition of all its publications; as OpenSIPS's presence_xml does, the notified document
is one `<presence entity="...">` holding every child element of every publication
(tuples, notes, RFC 4479 persons...), oldest publication first.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence

PIDF_NS = "urn:ietf:params:xml:ns:pidf"
CONTENT_TYPE = "application/pidf+xml"
MAX_BODY = 64 * 1024  # bytes of one publication

ET.register_namespace("", PIDF_NS)


class PidfError(ValueError):
    """A body that is not a PIDF document we accept."""


def parse(body: bytes) -> ET.Element:
    """The `<presence>` element of a PIDF body (PidfError when it is not one)."""
    if len(body) > MAX_BODY:
        raise PidfError("body too large")
    if b"<!DOCTYPE" in body.upper() or b"<!ENTITY" in body.upper():
        raise PidfError("DTDs are not accepted")
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise PidfError(f"not well-formed XML: {exc}") from None
    if root.tag != f"{{{PIDF_NS}}}presence":
        raise PidfError("root is not a PIDF <presence>")
    if not root.get("entity"):
        raise PidfError("<presence> has no entity")  # RFC 3863 §4.1.1
    return root


def basic_status(body: bytes) -> str | None:
    """`open`/`closed` of the first tuple (None without one): for logs and MI."""
    try:
        root = parse(body)
    except PidfError:
        return None
    found = root.find(f"{{{PIDF_NS}}}tuple/{{{PIDF_NS}}}status/{{{PIDF_NS}}}basic")
    return None if found is None or found.text is None else found.text.strip()


def aggregate(entity: str, bodies: Sequence[bytes]) -> bytes:
    """One PIDF document for `entity` with the children of every body, in order."""
    out = ET.Element(f"{{{PIDF_NS}}}presence", {"entity": entity})
    for body in bodies:
        try:
            root = parse(body)
        except PidfError:
            continue  # checked when published: cannot happen for a stored body
        out.extend(list(root))
    data: bytes = ET.tostring(out, encoding="utf-8", xml_declaration=True)
    return data


def document(entity: str, basic: str, *, tuple_id: str = "t1", contact: str = "",
             note: str = "") -> bytes:
    """A one-tuple PIDF document (tests, tools)."""
    contact_xml = f"<contact>{contact}</contact>" if contact else ""
    note_xml = f"<note>{note}</note>" if note else ""
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<presence xmlns="{PIDF_NS}" '
            f'entity="{entity}"><tuple id="{tuple_id}"><status><basic>{basic}</basic>'
            f"</status>{contact_xml}</tuple>{note_xml}</presence>").encode()
