"""Table names that are safe to format into SQL.

SQL parameters bind values, not identifiers, so a configured table name ends up in the
statement text; it is accepted only as a plain identifier of at most 63 characters (the
PostgreSQL limit), which also rules out quoting and injection.
"""

from __future__ import annotations

import re

_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")


def safe_table_name(name: str) -> str:
    """`name` unchanged when it is a plain identifier, else ValueError("bad table name ...")."""
    if not _IDENT.fullmatch(name):
        raise ValueError(f"bad table name {name!r}")
    return name
