"""``sipmesh address add|list|rm``: the trusted sources of the edge (OpenSIPS 2.4's
``address`` table of the ``permissions`` module), edited in SipMesh's ``address`` table
(:mod:`shared.store.edge_tables`) in the registrar's store (``[registrar] store``: a
SQLite file by default, or a ``postgresql://`` DSN; ``--store`` overrides). The edges read
it at start and on MI ``address_reload``::

    sipmesh address add 10.0.0.0/8 --grp 1 --context-info office
    sipmesh address add 192.0.2.7 --port 5060 --proto udp
    sipmesh address list
    sipmesh rpc address_reload          # or: opensips-cli -x mi address_reload

Exit codes: 0 done, 1 nothing to remove, 2 bad input or store unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from services.edge.permissions import AddressError, parse_address
from shared.store.edge_tables import Address, open_address_table
from sipmesh.cli.tables import StoreOption, echo_rows, registrar_store, run_on

GrpOption = Annotated[int, typer.Option("--grp", min=0, help="the group (OpenSIPS grp)")]
PortOption = Annotated[int, typer.Option(min=0, max=65535, help="source port, 0 = any")]
ProtoOption = Annotated[str, typer.Option(help="any, udp, tcp, tls, ws, wss, sctp")]


def _run(store: str | None, action: Any) -> Any:
    location = registrar_store(store)
    return run_on(lambda: open_address_table(location), "address table", action)


def _row(ip: str, grp: int, port: int, proto: str, pattern: str = "",
         context_info: str = "") -> Address:
    try:
        return parse_address(grp, ip, port=port, proto=proto, pattern=pattern,
                             context_info=context_info)
    except AddressError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _text(row: Address) -> str:
    where = f"{row.ip}/{row.mask}"
    port = f" port {row.port}" if row.port else ""
    extra = "".join(f" {k}={v!r}" for k, v in (("pattern", row.pattern),
                                               ("context_info", row.context_info)) if v)
    return f"grp {row.grp}  {where}{port} {row.proto}{extra}"


def register(app: typer.Typer) -> None:
    """Adds the ``sipmesh address`` group to the app."""
    group = typer.Typer(help="Trusted source addresses of the edge (OpenSIPS permissions).",
                        no_args_is_help=True)
    app.add_typer(group, name="address")

    @group.command("add")
    def add(ip: Annotated[str, typer.Argument(help="IP address or network ADDRESS/PREFIX")],
            grp: GrpOption = 1, port: PortOption = 0, proto: ProtoOption = "any",
            pattern: Annotated[str, typer.Option(
                help="shell wildcard the check's pattern must match ('' = any)")] = "",
            context_info: Annotated[str, typer.Option(
                help="text handed to routing when the address matches")] = "",
            store: StoreOption = None) -> None:
        """Add (or replace) a trusted address or network."""
        row = _row(ip, grp, port, proto, pattern, context_info)

        async def action(table: Any) -> int:
            return int(await table.put([row]))

        _run(store, action)
        typer.echo(f"added {_text(row)} (edges use it after `sipmesh rpc address_reload`)")

    @group.command("rm")
    def rm(ip: Annotated[str, typer.Argument(help="IP address or network ADDRESS/PREFIX")],
           grp: GrpOption = 1, port: PortOption = 0, proto: ProtoOption = "any",
           store: StoreOption = None) -> None:
        """Remove a trusted address or network (matched by grp, ip/mask, port, proto)."""
        row = _row(ip, grp, port, proto)

        async def action(table: Any) -> int:
            return int(await table.delete(row.grp, row.ip, row.mask, row.port, row.proto))

        if not _run(store, action):
            typer.echo(f"error: no address {_text(row)}", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed {_text(row)} (edges forget it after `sipmesh rpc address_reload`)")

    @group.command("list")
    def list_(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
              store: StoreOption = None) -> None:
        """List the address table."""
        async def action(table: Any) -> list[Address]:
            rows: list[Address] = await table.all()
            return rows

        echo_rows(_run(store, action), as_json=as_json, text=_text, none="no addresses",
                  fields=("grp", "ip", "mask", "port", "proto", "pattern", "context_info"))
