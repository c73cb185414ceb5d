"""The dialog MI commands, with OpenSIPS's names, params and JSON shapes (schemas in
contracts/mi/dlg_*.json and profile_*.json).

* `dlg_list` / `dlg_list_ctx` -- `{"Dialogs": [...]}`; with `callid [from_tag]` one
  dialog as `{"Dialog": {...}}` (404 "No such dialog"); `index counter` pages with a
  `count`. Each entry: ID (the numeric dialog id, h_entry << 32 | h_id, as a string),
  db_id, state (1-5), user_flags, timestart (answer time) and datestart, timeout (when
  the lifetime ends) and dateout, callid, from_uri, to_uri, caller_tag, caller_contact,
  callee_cseq, caller_route_set, caller_bind_addr and `CALLEES` (callee_tag,
  callee_contact, caller_cseq, callee_route_set, callee_bind_addr); `_ctx` adds
  `context` {values: [{name: value}], profiles: [{profile: value}]}. Values are the
  dialog's CDR extras (`acc_extra.<name>`), its sharing tag (`dlg_sharing_tag`) and the
  node that owns it (`owner`).
* `dlg_end_dlg h_entry h_id [extra_hdrs]` (2.4), `dlg_end_dlg dialog_id [extra_hdrs]` (3.x:
  the numeric ID or a Call-ID), `dlg_end_dlg callid=... [from_tag=...]`: BYE both ways
  (CANCEL when early), CDR written; 404 "Requested Dialog not found".
* `profile_get_size profile [value]` -> `{"Profile": {name, value, count, shared,
  replicated}}`; `profile_get_values profile` -> `[{value, count}]`;
  `profile_list_dlgs profile [value]` -> `{"Dialogs": [...]}`; `profile_end_dlgs profile
  [value]`; `list_all_profiles` -> `{"Profiles": [{name, "has value"}]}`. An unknown
  profile (not configured, not used by any dialog) is 404 "Profile not found".
* `dlg_cluster_sync` -- pull the whole table from a donor again (400 without a cluster).
* `SessionSv1.DisconnectSession {EventStart: {OriginID}, Reason}` -- what CGRateS sends to
  end a call whose credit ran out (OriginID: the Call-ID, `callid;from_tag` or the dialog
  ID); answers "OK".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from services.dialog.model import Dialog
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError, int_param

if TYPE_CHECKING:
    from services.dialog.app import DialogService


def _date(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _uri(value: str) -> str:
    start = value.find("<")
    if start >= 0:
        return value[start + 1:value.find(">", start)]
    return value.split(";", 1)[0].strip()


def dialog_entry(d: Dialog, *, context: bool = False, owner: int | None = None) -> dict[str, Any]:
    ident = str(d.id)
    start = d.answered_ms // 1000
    expiry = d.deadline_ms // 1000
    entry: dict[str, Any] = {"ID": ident, "db_id": ident, "state": int(d.state),
                             "user_flags": 0, "timestart": start}
    if start:
        entry["datestart"] = _date(start)
    entry["timeout"] = expiry
    if expiry:
        entry["dateout"] = _date(expiry)
    entry.update({
        "callid": d.callid, "from_uri": _uri(d.from_hdr), "to_uri": _uri(d.to_hdr),
        "caller_tag": d.from_tag, "caller_contact": d.caller_contact,
        "callee_cseq": str(d.callee_cseq), "caller_route_set": ",".join(d.caller_route),
        "caller_bind_addr": d.socket,
    })
    callees = []
    if d.to_tag:
        callees.append({
            "callee_tag": d.to_tag, "callee_contact": d.callee_contact,
            "caller_cseq": str(d.caller_cseq), "callee_route_set": ",".join(d.callee_route),
            "callee_bind_addr": d.socket,
        })
    entry["CALLEES"] = callees
    if context:
        values: list[dict[str, str]] = []
        if d.sharing_tag:
            values.append({"dlg_sharing_tag": d.sharing_tag})
        if owner is not None:
            values.append({"owner": str(owner)})
        for name, value in sorted((d.extra or {}).items()):
            values.append({f"acc_extra.{name}": value})
        ctx: dict[str, Any] = {}
        if values:
            ctx["values"] = values
        if d.profiles:
            ctx["profiles"] = [{name: value or ""} for name, value in d.profiles]
        entry["context"] = ctx
    return entry


def parse_origin(origin: str) -> tuple[str, str | None] | tuple[int, int]:
    """A dialog reference as billing systems give it: a numeric dialog ID (-> h_entry,
    h_id), `callid;from_tag`, or a bare Call-ID."""
    if origin.isdigit():
        value = int(origin)
        return (value >> 32, value & 0xFFFFFFFF)
    callid, sep, tag = origin.rpartition(";")
    if sep and callid and tag and "@" not in tag:
        return (callid, tag)
    return (origin, None)


def register_mi(runtime: Any, svc: DialogService) -> None:
    table = svc.table
    command = runtime.command

    def visible(dialogs: Iterable[Dialog]) -> list[Dialog]:
        # Reservations are places in profiles, not calls; OpenSIPS has no such thing.
        return [d for d in dialogs if not d.reserved]

    def listing(context: bool) -> Callable[..., Any]:
        async def run(callid: str | None = None, from_tag: str | None = None,
                      index: Any = None, counter: Any = None) -> Any:
            if callid is not None:
                d = table.find(str(callid), None if from_tag is None else str(from_tag))
                if d is None or d.reserved or d.state == 5:
                    raise MiError(NOT_FOUND, "No such dialog")
                return {"Dialog": dialog_entry(d, context=context, owner=svc.owner_of(d))}
            dialogs = visible(table)
            out: dict[str, Any] = {}
            if index is not None:
                start, count = int_param(index, "index"), int_param(counter, "counter")
                out["count"] = len(dialogs)
                dialogs = dialogs[start:start + count]
            out["Dialogs"] = [dialog_entry(d, context=context, owner=svc.owner_of(d))
                              for d in dialogs]
            return out

        return run

    recipes = ((), ("callid",), ("callid", "from_tag"), ("index", "counter"))
    command("dlg_list", recipes, doc="the dialogs (OpenSIPS dialog module)")(listing(False))
    command("dlg_list_ctx", recipes, doc="the dialogs with their context")(listing(True))

    async def dlg_end_dlg(h_entry: Any = None, h_id: Any = None, dialog_id: Any = None,
                          callid: Any = None, from_tag: Any = None,
                          extra_hdrs: Any = None) -> Any:
        d: Dialog | None
        if h_entry is not None:
            d = table.find_by_id(int_param(h_entry, "h_entry"), int_param(h_id, "h_id"))
        elif dialog_id is not None:
            ref = parse_origin(str(dialog_id))
            d = table.find_by_id(*ref) if isinstance(ref[0], int) else \
                table.find(str(ref[0]), ref[1])
        else:
            d = table.find(str(callid), None if from_tag is None else str(from_tag))
        if d is None or d.reserved or d.state == 5:
            raise MiError(NOT_FOUND, "Requested Dialog not found")
        headers = tuple(h for h in str(extra_hdrs or "").replace("\r", "").split("\n") if h)
        svc.end(d, "mi", headers)
        return "OK"

    command("dlg_end_dlg", (("h_entry", "h_id"), ("h_entry", "h_id", "extra_hdrs"),
                            ("dialog_id",), ("dialog_id", "extra_hdrs"), ("callid",),
                            ("callid", "from_tag")),
            doc="end a dialog: BYE both ways (CANCEL if early)")(dlg_end_dlg)

    def known(name: str) -> None:
        config = svc.config
        if name in config.profiles_with_value or name in config.profiles_no_value:
            return
        if name in table.profile_all or any(
                p == name for d in table for p, _v in d.profiles):
            return
        raise MiError(NOT_FOUND, "Profile not found")

    async def profile_get_size(profile: str, value: Any = None) -> Any:
        name = str(profile)
        known(name)
        val = None if value is None else str(value)
        return {"Profile": {"name": name, "value": val, "count": table.profile_size(name, val),
                            "shared": "no",
                            "replicated": "yes" if svc.cluster is not None else "no"}}

    command("profile_get_size", (("profile",), ("profile", "value")),
            doc="dialogs in a profile")(profile_get_size)

    async def profile_get_values(profile: str) -> Any:
        name = str(profile)
        known(name)
        values = table.profile_values_of(name)
        if not values and name not in svc.config.profiles_with_value:
            return [{"value": None, "count": table.profile_size(name)}]
        return [{"value": v, "count": n} for v, n in sorted(values.items())]

    command("profile_get_values", (("profile",),), doc="profile sizes per value")(
        profile_get_values)

    def members(name: str, value: Any) -> list[Dialog]:
        val = None if value is None else str(value)
        return [d for d in visible(table) if d.state != 5 and any(
            p == name and (val is None or v == val) for p, v in d.profiles)]

    async def profile_list_dlgs(profile: str, value: Any = None) -> Any:
        name = str(profile)
        known(name)
        return {"Dialogs": [dialog_entry(d, owner=svc.owner_of(d))
                            for d in members(name, value)]}

    command("profile_list_dlgs", (("profile",), ("profile", "value")),
            doc="the dialogs of a profile")(profile_list_dlgs)

    async def profile_end_dlgs(profile: str, value: Any = None) -> Any:
        name = str(profile)
        known(name)
        for d in members(name, value):
            svc.end(d, "mi", ())
        return "OK"

    command("profile_end_dlgs", (("profile",), ("profile", "value")),
            doc="end every dialog of a profile")(profile_end_dlgs)

    async def list_all_profiles() -> Any:
        config = svc.config
        names: dict[str, bool] = {n: True for n in config.profiles_with_value}
        names.update({n: False for n in config.profiles_no_value})
        for d in table:
            for p, v in d.profiles:
                names.setdefault(p, v is not None)
        return {"Profiles": [{"name": n, "has value": v} for n, v in sorted(names.items())]}

    command("list_all_profiles", doc="every profile known")(list_all_profiles)

    async def dlg_cluster_sync() -> Any:
        if svc.cluster is None:
            raise MiError(BAD_REQUEST, "Dialog replication disabled")
        svc.request_sync()
        return "OK"

    command("dlg_cluster_sync", doc="pull the dialog table from a donor again")(
        dlg_cluster_sync)

    async def disconnect_session(args: Any = None, EventStart: Any = None,
                                 Reason: Any = None) -> Any:
        if isinstance(args, dict):
            EventStart, Reason = args.get("EventStart"), args.get("Reason")
        if not isinstance(EventStart, dict) or not EventStart.get("OriginID"):
            raise MiError(BAD_REQUEST, "EventStart.OriginID is required")
        ref = parse_origin(str(EventStart["OriginID"]))
        d = table.find_by_id(*ref) if isinstance(ref[0], int) else \
            table.find(str(ref[0]), ref[1])
        if d is None or d.reserved or d.state == 5:
            raise MiError(NOT_FOUND, "Requested Dialog not found")
        # The engine's reason goes to the phones in a Reason header (RFC 3326), reduced
        # to harmless characters: it comes from outside.
        text = "".join(c for c in str(Reason or "")[:64] if c.isalnum() or c in " _.-:")
        svc.end(d, "billing", (f'Reason: Q.850;cause=16;text="{text}"',) if text else ())
        return "OK"

    command("SessionSv1.DisconnectSession",
            (("args",), ("EventStart",), ("EventStart", "Reason")),
            doc="CGRateS: end a call whose credit ran out")(disconnect_session)
