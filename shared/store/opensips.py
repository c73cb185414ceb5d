"""Telling an OpenSIPS table from SipMesh's own, so a store never trips over one.

SipMesh's tables may differ from OpenSIPS's (ARCHITECTURE: "an OpenSIPS 2.4 database can
be imported, and pointing SipMesh at an OpenSIPS table fails with a clear message").
A store opens its table with ``CREATE TABLE IF NOT EXISTS``; when the table already
exists with OpenSIPS 2.4's columns, SipMesh's statements would fail later with a driver
error. :func:`check_table` is called right after, with the columns the table has: an
OpenSIPS table (one whose columns include a signature below and lack SipMesh's) raises
:class:`OpenSIPSTableError`, a :class:`~shared.config.ConfigError` whose one line names
``sipmesh import opensips``; a process shows it as a configuration error (exit 78), the
CLI as one line. A location that is a MySQL URL is refused the same way
(:func:`check_location`): SipMesh stores in SQLite or PostgreSQL, and reads MySQL only to
import from it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from shared.config import ConfigError

IMPORT_HINT = "sipmesh import opensips --db URL"
# Columns only OpenSIPS 2.4's table of that name has (scripts/*/<module>-create.sql).
SIGNATURES: dict[str, frozenset[str]] = {
    "subscriber": frozenset({"id", "username", "domain", "password", "ha1", "ha1b"}),
    "location": frozenset({"contact_id", "username", "contact", "callid", "cseq"}),
    "address": frozenset({"id", "grp", "ip", "mask", "port", "proto"}),
    "dispatcher": frozenset({"id", "setid", "destination", "state", "weight"}),
}
_COLUMN = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s", re.M)
_NOT_COLUMNS = {"PRIMARY", "UNIQUE", "CONSTRAINT", "FOREIGN", "CHECK", "KEY", "INDEX"}


class OpenSIPSTableError(ConfigError):
    """SipMesh was pointed at an OpenSIPS table (or database) it does not use as is."""


def ddl_columns(ddl: str) -> list[str]:
    """The column names a ``CREATE TABLE ... ({t} ...)`` template declares."""
    body = ddl[ddl.index("(") + 1:ddl.rindex(")")]
    parts, depth, current = [], 0, ""
    for char in body:  # split on the commas that are not inside parentheses
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    names = []
    for part in parts:
        found = _COLUMN.match(part + " ")
        if found and found.group(1).upper() not in _NOT_COLUMNS:
            names.append(found.group(1).lower())
    return names


def looks_like_opensips(columns: Iterable[str]) -> str | None:
    """The OpenSIPS table these columns are, or None."""
    have = {c.lower() for c in columns}
    for name, signature in SIGNATURES.items():
        if signature <= have:
            return name
    return None


def check_table(table: str, columns: Iterable[str], wanted: Iterable[str],
                where: str) -> None:
    """Raises :class:`OpenSIPSTableError` when ``table`` (in ``where``) has OpenSIPS's
    columns instead of SipMesh's ``wanted`` ones; anything else is left alone."""
    have = {c.lower() for c in columns}
    missing = [c for c in wanted if c.lower() not in have]
    if not missing:
        return
    kind = looks_like_opensips(have)
    if kind is None:
        return
    raise OpenSIPSTableError(
        f"table {table!r} in {where} is an OpenSIPS {kind} table, not SipMesh's (it has no "
        f"{', '.join(missing)}): SipMesh keeps its own tables; bring the OpenSIPS data "
        f"over with `{IMPORT_HINT}` and point SipMesh at another database or table")


def check_location(location: str) -> None:
    """Refuses a store location SipMesh cannot store in (a MySQL URL, another scheme)."""
    scheme = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://", location)
    if scheme and scheme.group(1).lower() not in ("postgresql", "postgres", "file"):
        raise OpenSIPSTableError(
            f"{scheme.group(1)}:// store {location.split('@')[-1]!r}: SipMesh stores in "
            f"SQLite (a file path) or PostgreSQL (postgresql://); to bring an OpenSIPS "
            f"database over, run `{IMPORT_HINT}`")


__all__ = ["IMPORT_HINT", "OpenSIPSTableError", "check_location", "check_table",
           "ddl_columns", "looks_like_opensips"]
