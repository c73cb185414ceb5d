"""The edge's address permissions in a running process: the table read, the MI commands.

The rules are in :mod:`services.edge.permissions` (sans-IO); this module reads SipMesh's
``address`` table (:mod:`shared.store.edge_tables`; ``[edge] address_db``, by default the
registrar's store, where ``sipmesh address add`` and ``sipmesh import opensips`` write) at
start and on ``address_reload``, and declares the MI commands, with OpenSIPS 2.4's names
(answers in OpenSIPS 3's JSON shape; schemas in ``contracts/mi``):

* ``address_reload`` -> "OK" once the table was read again (every edge, through the
  gateway); 400 "Address table reload failed" when it cannot be read (the loaded copy stays);
* ``address_dump`` / ``subnet_dump`` -> the exact hosts / the networks loaded;
* ``check_addr grp ip port proto [pattern]`` -> ``{"match": true, "grp", "ip", "mask",
  "port", "proto", "context_info"}`` of the row ``check_address`` would match, else
  ``{"match": false}``.

Statistics group ``permissions:``: ``addresses``, ``subnets``, ``skipped``, ``reloads``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

from services.edge.permissions import AddressPermissions, SourceTrust
from shared.rpc.jsonrpc import BAD_REQUEST, MiError, int_param
from shared.store.edge_tables import open_address_table

if TYPE_CHECKING:
    from services.edge.config import EdgeConfig
    from shared.service.runtime import ServiceRuntime


def address_location(config: EdgeConfig) -> str | None:
    """Where the address table is: ``[edge] address_db``, else the registrar's store;
    None when turned off (``none``)."""
    if config.address_db.lower() == "none":
        return None
    if config.address_db:
        return config.address_db
    from services.registrar.config import RegistrarConfig
    from shared.config import load_section

    return load_section(RegistrarConfig, "registrar").store_location


class AddressTableLoader:
    """Reads the address table into `trust` (a SourceTrust)."""

    def __init__(self, location: str | None, trust: SourceTrust) -> None:
        self.location = location
        self.trust = trust
        self.reloads = 0
        self.log = structlog.get_logger("edge")

    async def reload(self) -> AddressPermissions:
        if self.location is None:
            return self.trust.table
        table = open_address_table(self.location)
        await table.open()
        try:
            rows = await table.all()
        finally:
            await table.close()
        loaded = AddressPermissions(rows)
        for row, reason in loaded.skipped:
            self.log.warning("permissions.row_skipped", grp=row.grp, ip=row.ip, reason=reason)
        self.trust.load(loaded)
        self.reloads += 1
        self.log.info("permissions.loaded", addresses=loaded.size - len(loaded.subnets),
                      subnets=len(loaded.subnets), skipped=len(loaded.skipped))
        return loaded

    def statistics(self) -> dict[str, int]:
        table = self.trust.table
        return {"addresses": table.size - len(table.subnets), "subnets": len(table.subnets),
                "skipped": len(table.skipped), "reloads": self.reloads}


def attach_permissions(runtime: ServiceRuntime, trust: SourceTrust,
                       config: EdgeConfig) -> AddressTableLoader:
    """Declares the MI commands and reads the table when the edge starts."""
    loader = AddressTableLoader(address_location(config), trust)

    @runtime.on_start
    async def _load() -> None:
        try:
            await loader.reload()
        except Exception as exc:  # the edge still runs on [edge] trusted
            loader.log.warning("permissions.load_failed", location=loader.location,
                               error=str(exc), consequence="only [edge] trusted is trusted")

    @runtime.command("address_reload", fanout=True, doc="read the address table again")
    async def address_reload() -> Any:
        if loader.location is None:
            raise MiError(BAD_REQUEST, "Address table reload failed",
                          "[edge] address_db is none")
        try:
            await loader.reload()
        except Exception as exc:
            loader.log.warning("permissions.reload_failed", error=str(exc))
            raise MiError(BAD_REQUEST, "Address table reload failed") from None
        return "OK"

    @runtime.command("address_dump", doc="the addresses (exact hosts) of the address table")
    async def address_dump() -> Any:
        return trust.table.dump()

    @runtime.command("subnet_dump", doc="the networks of the address table")
    async def subnet_dump() -> Any:
        return trust.table.subnet_dump()

    @runtime.command("check_addr", (("grp", "ip", "port", "proto"),
                                    ("grp", "ip", "port", "proto", "pattern")),
                     doc="the address row check_address(grp, ip, port, proto) matches")
    async def check_addr(grp: Any, ip: Any, port: Any, proto: Any,
                         pattern: Any = None) -> Any:
        group = int_param(grp, "grp")
        number = int_param(port, "port")
        if group < 0 or not 0 <= number < 65536:
            raise MiError(BAD_REQUEST, "Bad grp" if group < 0 else "Bad port")
        row = trust.table.check(group, str(ip), number, str(proto),
                                None if pattern is None else str(pattern))
        if row is None:
            return {"match": False}
        return {"match": True, "grp": row.grp, "ip": row.ip, "mask": row.mask,
                "port": row.port, "proto": row.proto, "context_info": row.context_info}

    runtime.stats.group("permissions", loader.statistics)
    return loader
