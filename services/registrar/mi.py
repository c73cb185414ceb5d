"""The usrloc MI commands, named and shaped as OpenSIPS 3 answers them in JSON
(modules/usrloc/ul_mi.c; schemas in contracts/mi/ul_*.json):

* `ul_dump [brief]` -> `{"Domains": [{"name", "hash_size", "AORs": [{"AOR", "Contacts":
  [{"Contact", "ContactID", "Expires", "Q", "Callid", "Cseq", "User-agent", "Received",
  "Path", "State", "Flags", "Cflags", "Socket", "Methods", "Attr", "SIP_instance",
  "Ping-Latency"}]}]}]}` (optional keys only when set; `brief` leaves out the contacts);
* `ul_show_contact table_name aor` -> `{"AOR", "Contacts"}`, 404 "AOR not found";
* `ul_rm table_name aor`, `ul_rm_contact table_name aor contact`, `ul_flush`,
  `ul_add table_name aor contact expires q [unused] flags cflags methods` -> "OK";
* `ul_sync table_name [aor]` -> rewrites the SQL location table from memory (the AOR's
  rows only, with an AOR); 400 without SQL storage (`sql_write_mode`/`load-from-sql`);
* `ul_cluster_sync` -> "OK" once a full sync was requested (400 when not clustered).

`ul_dump` and `ul_show_contact` are fan-out commands: the gateway asks every registrar node
and unites the answers (gateway/merging.py), so a mesh whose nodes each hold their own
bindings (cluster mode `none`, the PoPs of `federation-cachedb`) dumps all of them, and
the sharing modes list each contact once; `node_id` still asks a single node.

A table other than the configured one (`location`) answers 404 "Table not found"; an AOR
without a domain answers 400 "Domain missing in AOR", as OpenSIPS with use_domain.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.registrar.location import (
    Binding,
    RegisterError,
    parse_aor,
    parse_q,
)
from services.registrar.persistence import WriteFailed
from services.registrar.usrloc import CAPABILITY, UserLocation
from shared.cluster.config import ClusterConfig
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, SERVICE_UNAVAILABLE, MiError, int_param
from shared.service.runtime import ServiceRuntime

HASH_SIZE = 512  # OpenSIPS hash_size 9 (2^9), reported as ul_dump's hash_size


def contact_item(b: Binding, now: float) -> dict[str, Any]:
    item: dict[str, Any] = {"Contact": b.uri, "ContactID": str(b.contact_id)}
    if b.expires == 0:
        item["Expires"] = "permanent"
    elif now > b.expires:
        item["Expires"] = "expired"
    else:
        item["Expires"] = b.remaining(now)
    item["Q"] = b.q_text()
    item["Callid"] = b.callid
    item["Cseq"] = b.cseq
    if b.user_agent:
        item["User-agent"] = b.user_agent
    if b.received:
        item["Received"] = b.received
    if b.path:
        item["Path"] = ",".join(b.path)
    item["State"] = "CS_NEW"
    item["Flags"] = b.flags
    item["Cflags"] = str(b.cflags) if b.cflags else ""
    if b.socket:
        item["Socket"] = b.socket
    item["Methods"] = b.methods
    if b.attr:
        item["Attr"] = b.attr
    if b.instance:
        item["SIP_instance"] = b.instance
    if b.latency > 0:
        item["Ping-Latency"] = b.latency
    return item


@dataclasses.dataclass(frozen=True)
class _NodeName(ClusterConfig):
    node_id: int = 0  # 0: not configured (ClusterConfig's default 1 would hide that)


def standalone_node_meta(section: str = "registrar.cluster") -> dict[str, str]:
    """Discovery metadata naming a registrar that runs no cluster (modes `none`,
    `sql-only`) as a node, when `[registrar.cluster] node_id` is configured: MI `node_id`
    at the gateway then asks that node alone. Nothing when it is not (no made-up id)."""
    from shared.config import load_section

    named = load_section(_NodeName, section)
    if named.node_id <= 0:
        return {}
    return {"cluster_id": str(named.cluster_id), "cluster_node_id": str(named.node_id)}


def register_mi(runtime: ServiceRuntime, ul: UserLocation, sql: Any = None) -> None:
    table = ul.location.table

    def check_table(name: Any) -> None:
        if str(name) != table:
            raise MiError(NOT_FOUND, "Table not found")

    async def stored() -> None:
        """An MI change answers "OK" only once it is stored (write-through, sql-only)."""
        try:
            await ul.commit()
        except WriteFailed:
            raise MiError(SERVICE_UNAVAILABLE, "Location table not written") from None

    def aor_of(value: Any) -> str:
        text = str(value)
        if "@" not in text:
            raise MiError(BAD_REQUEST, "Domain missing in AOR")
        try:
            return parse_aor(text)
        except RegisterError as exc:
            raise MiError(BAD_REQUEST, exc.reason) from None

    @runtime.command("ul_dump", ((), ("brief",)), fanout=True,
                     doc="dump the user location table")
    async def ul_dump(brief: Any = None) -> Any:
        short = str(brief).lower() in ("1", "brief", "true") if brief is not None else False
        await ul.refresh()  # sql-only: the shared table
        now = ul.clock()
        aors = []
        for aor, bindings in ul.location.records.items():
            entry: dict[str, Any] = {"AOR": aor}
            if not short:
                entry["Contacts"] = [contact_item(b, now) for b in bindings]
            aors.append(entry)
        return {"Domains": [{"name": table, "hash_size": HASH_SIZE, "AORs": aors}]}

    @runtime.command("ul_show_contact", (("table_name", "aor"),), fanout=True,
                     doc="the contacts of one AOR")
    async def ul_show_contact(table_name: Any, aor: Any) -> Any:
        check_table(table_name)
        key = aor_of(aor)
        await ul.refresh(key)
        bindings = ul.location.records.get(key)
        if not bindings:
            raise MiError(NOT_FOUND, "AOR not found")
        now = ul.clock()
        return {"AOR": key, "Contacts": [contact_item(b, now) for b in bindings]}

    @runtime.command("ul_rm", (("table_name", "aor"),), doc="remove an AOR and its contacts")
    async def ul_rm(table_name: Any, aor: Any) -> Any:
        check_table(table_name)
        key = aor_of(aor)
        await ul.refresh(key)
        ul.remove_aor(key)
        await stored()
        return "OK"

    @runtime.command("ul_rm_contact", (("table_name", "aor", "contact"),),
                     doc="remove one contact of an AOR")
    async def ul_rm_contact(table_name: Any, aor: Any, contact: Any) -> Any:
        check_table(table_name)
        key = aor_of(aor)
        await ul.refresh(key)
        if key not in ul.location.records:
            raise MiError(NOT_FOUND, "AOR not found")
        if not ul.remove_contact(key, str(contact)):
            raise MiError(NOT_FOUND, "Contact not found")
        await stored()
        return "OK"

    @runtime.command("ul_flush", doc="write pending changes to the SQL location table")
    async def ul_flush() -> Any:
        try:
            await ul.flush()
        except WriteFailed:
            raise MiError(SERVICE_UNAVAILABLE, "Location table not written") from None
        return "OK"

    add_recipes = (
        ("table_name", "aor", "contact", "expires", "q", "unused", "flags", "cflags",
         "methods"),
        ("table_name", "aor", "contact", "expires", "q", "flags", "cflags", "methods"),
    )

    @runtime.command("ul_add", add_recipes, doc="add (or replace) a contact by hand")
    async def ul_add(table_name: Any, aor: Any, contact: Any, expires: Any, q: Any,
                     flags: Any, cflags: Any, methods: Any, unused: Any = None) -> Any:
        check_table(table_name)
        key = aor_of(aor)
        seconds = int_param(expires, "expires")
        if seconds < 0:
            raise MiError(BAD_REQUEST, "Bad parameter value")
        try:
            qv = parse_q(str(q)) if str(q) != "" else -1
        except RegisterError:
            raise MiError(BAD_REQUEST, "Bad parameter value") from None
        now = ul.clock()
        binding = Binding(
            aor=key, uri=str(contact), expires=int(now) + seconds if seconds else 0, q=qv,
            callid="dfjrewr12386fd6-343@opensips.mi", cseq=1,
            user_agent="SipMesh MI Server", flags=int_param(flags, "flags"),
            cflags=int_param(cflags, "cflags"), methods=int_param(methods, "methods") & 0xFFFFFFFF)
        if not binding.is_utf8():
            raise MiError(BAD_REQUEST, "Bad parameter value")
        await ul.refresh(key)
        ul.add(binding)
        await stored()
        return "OK"

    @runtime.command("ul_sync", (("table_name",), ("table_name", "aor")),
                     doc="rewrite the SQL location table (not kept here)")
    async def ul_sync(table_name: Any, aor: Any = None) -> Any:
        check_table(table_name)
        if sql is None:
            raise MiError(BAD_REQUEST, "No SQL location storage configured")
        if aor is None:
            await sql.replace_all(list(ul.location.bindings()))
            return "OK"
        key = aor_of(aor)
        bindings = ul.location.records.get(key)
        if not bindings:
            raise MiError(NOT_FOUND, "AOR not found")
        await sql.write(list(bindings), [])
        return "OK"

    @runtime.command("ul_cluster_sync", doc="pull the whole table from a cluster donor")
    async def ul_cluster_sync() -> Any:
        if ul.cluster is None:
            raise MiError(BAD_REQUEST, "Clustering not enabled")
        ul.cluster.request_sync(CAPABILITY)
        return "OK"

    runtime.stats.group("usrloc", lambda: {
        "registered_users": len(ul.location.records),
        f"{table}-users": len(ul.location.records),
        f"{table}-contacts": ul.location.contact_count,
        f"{table}-expires": ul.stats["expired"],
        # The SQL copy (write-through / write-back): transactions written, failed, and
        # changed bindings not yet stored.
        **({"sql_writes": ul.writer.writes, "sql_write_failures": ul.writer.failures,
            "sql_pending": len(ul.writer.pending)} if ul.writer is not None else {}),
        # federation-cachedb: the points of presence this node currently sees alive.
        **({"federation_homes_alive": len(ul.directory.live or ())}
           if ul.directory is not None else {}),
    })
    runtime.stats.group("registrar", lambda: {
        "accepted_regs": ul.stats["saves"] - ul.stats["save_errors"],
        "rejected_regs": ul.stats["save_errors"],
        # 503s of the replicating modes: not synced yet / no other node confirmed in time
        "unsynced_refused": ul.stats["unsynced_refused"],
        "unreplicated_refused": ul.stats["unreplicated_refused"],
    })
