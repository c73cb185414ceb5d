"""OpenSIPS 2.4 rows turned into SipMesh's (sans-IO: rows in, records or a reason out).

Each ``*_from_row`` takes one row of an OpenSIPS 2.4 table as a mapping of column name
to value (as the database driver returns it) and answers either SipMesh's record or a
:class:`Skip` saying why the row cannot be carried over. Columns are read by name, so a
table with extra columns (a later OpenSIPS) or without optional ones still converts.

* ``subscriber`` (auth_db, version 7: ``username, domain, password, email_address, ha1,
  ha1b, rpid``): SipMesh keeps HA1 hashes only, with realm = domain as OpenSIPS does by
  default. A plaintext ``password`` (OpenSIPS ``calculate_ha1 = 1``) gives both hashes,
  MD5 and SHA-256 (RFC 7616 §3.4.2, RFC 8760); without one, the stored MD5 ``ha1`` is kept
  and SHA-256 stays empty (that user can answer MD5 challenges only: SHA-256 cannot be
  derived from an MD5 hash). ``ha1b`` (MD5 over ``user@domain``) has no use in SipMesh.
* ``location`` (usrloc, version 1013; also 2.x tables whose ``expires`` is a DATETIME):
  one binding per row, AOR ``username@domain`` (``default_domain`` for rows without a
  domain, OpenSIPS ``use_domain = 0``). ``expires`` 0 is a permanent binding; one already
  expired at ``now`` is skipped. ``q`` 0..1 becomes SipMesh's 0..1000; ``path`` (the Path
  header values joined by commas) is split back into its values; ``methods`` NULL means
  every method; ``cflags`` is OpenSIPS 2.4's flag names, which SipMesh has no use for (0).
* ``address`` (permissions, version 5) and ``dispatcher`` (dispatcher, version 8): copied
  column for column into SipMesh's tables (:mod:`shared.store.edge_tables`); an unknown
  ``proto`` or a non-numeric dispatcher ``weight`` (2.4 allows a FreeSWITCH URL there)
  is reported.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping
from typing import Any

from services.registrar.location import (
    ALL_METHODS,
    Q_UNSPECIFIED,
    Binding,
    RegisterError,
    parse_aor,
)
from services.registrar.subscribers import Subscriber, ha1_hashes
from shared.store.edge_tables import PROTOS, Address, Destination

_HEX32 = re.compile(r"^[0-9a-fA-F]{32}$")
Row = Mapping[str, Any]


@dataclasses.dataclass(frozen=True)
class Skip:
    """A row that is not carried over, and why (shown in the summary)."""

    reason: str


@dataclasses.dataclass(frozen=True)
class Converted:
    """A row carried over; ``note`` says what was changed on the way, if anything."""

    record: Any
    note: str = ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def _int(value: Any, default: int = 0) -> int:
    if value is None or value == "":
        return default
    return int(value)


def _epoch(value: Any) -> float:
    """An OpenSIPS time column (unix seconds, or a DATETIME read as local time)."""
    if value is None:
        return 0.0
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, int | float):
        return float(value)
    text = _text(value).strip()
    if text.isdigit():
        return float(text)
    return datetime.datetime.fromisoformat(text).timestamp()


def subscriber_from_row(row: Row) -> Converted | Skip:
    username, domain = _text(row.get("username")), _text(row.get("domain"))
    if not username or not domain:
        return Skip("no username or domain")
    password = _text(row.get("password"))
    if password:
        md5, sha = ha1_hashes(username, domain, password)
        return Converted(Subscriber(username, domain, md5, sha), "hashed from password")
    ha1 = _text(row.get("ha1")).strip()
    if _HEX32.match(ha1):
        return Converted(Subscriber(username, domain, ha1.lower(), ""), "MD5 HA1 only")
    return Skip("neither a password nor an MD5 ha1")


def split_path(text: str) -> tuple[str, ...]:
    """Path header values joined by commas (as usrloc stores them) split back: commas
    inside ``<...>`` or quotes belong to the value."""
    values, current, depth, quoted = [], "", 0, False
    for char in text:
        if char == '"':
            quoted = not quoted
        elif not quoted and char == "<":
            depth += 1
        elif not quoted and char == ">":
            depth = max(depth - 1, 0)
        if char == "," and depth == 0 and not quoted:
            values.append(current.strip())
            current = ""
        else:
            current += char
    values.append(current.strip())
    return tuple(v for v in values if v)


def binding_from_row(row: Row, *, now: float, default_domain: str = "") -> Converted | Skip:
    username = _text(row.get("username"))
    domain = _text(row.get("domain")) or default_domain
    contact = _text(row.get("contact"))
    if not username or not contact:
        return Skip("no username or contact")
    if not domain:
        return Skip("no domain (OpenSIPS use_domain = 0): give --domain")
    try:
        aor = parse_aor(f"{username}@{domain}")
    except RegisterError:
        return Skip("AOR is not user@domain")
    expires = _epoch(row.get("expires"))
    if 0 < expires <= now:
        return Skip("expired")
    q_value = row.get("q")
    q = Q_UNSPECIFIED if q_value is None else round(float(q_value) * 1000)
    if not Q_UNSPECIFIED <= q <= 1000:
        q = Q_UNSPECIFIED
    cflags_text = _text(row.get("cflags")).strip()
    methods = row.get("methods")
    binding = Binding(
        aor=aor, uri=contact, expires=int(expires), q=q,
        callid=_text(row.get("callid")), cseq=_int(row.get("cseq")),
        received=_text(row.get("received")), path=split_path(_text(row.get("path"))),
        instance=_text(row.get("sip_instance")), user_agent=_text(row.get("user_agent")),
        socket=_text(row.get("socket")),
        methods=ALL_METHODS if methods is None else _int(methods) & ALL_METHODS,
        flags=_int(row.get("flags")),
        cflags=int(cflags_text) if cflags_text.isdigit() else 0,
        attr=_text(row.get("attr")), last_modified=max(_epoch(row.get("last_modified")), 0.0))
    note = "cflags names dropped" if cflags_text and not cflags_text.isdigit() else ""
    return Converted(binding, note)


def address_from_row(row: Row) -> Converted | Skip:
    ip = _text(row.get("ip")).strip()
    if not ip:
        return Skip("no ip")
    proto = (_text(row.get("proto")) or "any").strip().lower()
    if proto not in PROTOS:
        return Skip(f"unknown proto {proto!r}")
    return Converted(Address(
        grp=_int(row.get("grp")), ip=ip, mask=_int(row.get("mask"), 32),
        port=_int(row.get("port")), proto=proto, pattern=_text(row.get("pattern")),
        context_info=_text(row.get("context_info"))))


def destination_from_row(row: Row) -> Converted | Skip:
    destination = _text(row.get("destination")).strip()
    if not destination:
        return Skip("no destination")
    weight_text = _text(row.get("weight")).strip() or "1"
    note = ""
    if weight_text.isdigit():
        weight = int(weight_text)
    else:
        # 2.4 allows a FreeSWITCH URL here (with its password): never echo it.
        weight, note = 1, "weight is not a number (a FreeSWITCH URL?): 1 used"
    return Converted(Destination(
        setid=_int(row.get("setid")), destination=destination,
        socket=_text(row.get("socket")), state=_int(row.get("state")), weight=weight,
        priority=_int(row.get("priority")), attrs=_text(row.get("attrs")),
        description=_text(row.get("description"))), note)


__all__ = ["Converted", "Skip", "address_from_row", "binding_from_row",
           "destination_from_row", "split_path", "subscriber_from_row"]
