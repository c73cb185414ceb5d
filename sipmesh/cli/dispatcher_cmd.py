"""``sipmesh dispatcher add|list|rm``: the edge's gateway sets (OpenSIPS 2.4's
``dispatcher`` table), edited in SipMesh's ``dispatcher`` table
(:mod:`shared.store.edge_tables`) in the registrar's store (``[registrar] store``;
``--store`` overrides). The edges read it at start and on MI ``ds_reload``::

    sipmesh dispatcher add 1 sip:gw1.example.com:5060 --weight 3 --description "carrier A"
    sipmesh dispatcher list
    sipmesh rpc ds_reload               # or: opensips-cli -x mi ds_reload

Exit codes: 0 done, 1 nothing to remove, 2 bad input or store unreachable.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from shared.sip import SipParseError, parse_uri
from shared.store.edge_tables import Destination, open_dispatcher_table
from sipmesh.cli.tables import StoreOption, echo_rows, registrar_store, run_on

SetArgument = Annotated[int, typer.Argument(min=0, help="the set id (OpenSIPS setid)")]
UriArgument = Annotated[str, typer.Argument(help="the destination's SIP URI")]


def _run(store: str | None, action: Any) -> Any:
    location = registrar_store(store)
    return run_on(lambda: open_dispatcher_table(location), "dispatcher table", action)


def _text(row: Destination) -> str:
    state = {0: "active", 1: "inactive", 2: "probing"}.get(row.state, str(row.state))
    extra = "".join(f" {k}={v!r}" for k, v in (("attrs", row.attrs),
                                               ("description", row.description)) if v)
    return (f"set {row.setid}  {row.destination}  {state} weight {row.weight} "
            f"priority {row.priority}{extra}")


def register(app: typer.Typer) -> None:
    """Adds the ``sipmesh dispatcher`` group to the app."""
    group = typer.Typer(help="Gateway sets of the edge's dispatcher (OpenSIPS dispatcher).",
                        no_args_is_help=True)
    app.add_typer(group, name="dispatcher")

    @group.command("add")
    def add(setid: SetArgument, uri: UriArgument,
            weight: Annotated[int, typer.Option(min=0, help="share in weight-based sets")] = 1,
            priority: Annotated[int, typer.Option(help="higher first")] = 0,
            inactive: Annotated[bool, typer.Option(help="start Inactive")] = False,
            attrs: Annotated[str, typer.Option(help="text handed to routing")] = "",
            description: Annotated[str, typer.Option()] = "",
            store: StoreOption = None) -> None:
        """Add (or replace) a destination of a set."""
        try:
            parse_uri(uri)
        except (ValueError, SipParseError) as exc:
            typer.echo(f"error: {uri!r} is not a SIP URI: {exc}", err=True)
            raise typer.Exit(2) from None
        row = Destination(setid, uri.strip(), state=1 if inactive else 0, weight=weight,
                          priority=priority, attrs=attrs, description=description)

        async def action(table: Any) -> int:
            return int(await table.put([row]))

        _run(store, action)
        typer.echo(f"added {_text(row)} (edges use it after `sipmesh rpc ds_reload`)")

    @group.command("rm")
    def rm(setid: SetArgument, uri: UriArgument, store: StoreOption = None) -> None:
        """Remove a destination from its set."""
        async def action(table: Any) -> int:
            return int(await table.delete(setid, uri.strip()))

        if not _run(store, action):
            typer.echo(f"error: no destination {uri} in set {setid}", err=True)
            raise typer.Exit(1)
        typer.echo(f"removed {uri} from set {setid} (edges forget it after "
                   "`sipmesh rpc ds_reload`)")

    @group.command("list")
    def list_(as_json: Annotated[bool, typer.Option("--json", help="JSON lines")] = False,
              store: StoreOption = None) -> None:
        """List the dispatcher table."""
        async def action(table: Any) -> list[Destination]:
            rows: list[Destination] = await table.all()
            return rows

        echo_rows(_run(store, action), as_json=as_json, text=_text, none="no destinations",
                  fields=("setid", "destination", "state", "weight", "priority", "attrs",
                          "description"))
