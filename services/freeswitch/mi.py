"""The bridge's MI commands (schemas in contracts/mi/fs_*.json).

OpenSIPS 2.4 freeswitch_scripting's, with its names and shapes:

* `fs_list` -> `{"Sockets": [{"if": "host:port", "Events": [...]}]}`, each socket with
  SipMesh's extras: `State` (up / connecting / down), `Group`, `SIP`, `Source`
  (config / db / mi), `Session-Count`, `Max-Sessions`, `Idle-CPU`, `Heartbeat-Age` (s,
  null before the first), `Reconnects` (links lost), `Error` (why it is not up);
* `fs_subscribe freeswitch_url events` / `fs_unsubscribe freeswitch_url events` -> "OK":
  the box republishes (or stops republishing) these events; an unknown box with a
  password in its URL is connected (until restart, as OpenSIPS' MI does);
* `fs_reload` -> "OK": the table's boxes replace those that came from it.

SipMesh's own (OpenSIPS has only the script function freeswitch_esl for these):

* `fs_add freeswitch_url [group [sip_uri]]` -> "OK": a box written to the store's table
  and connected; `fs_remove freeswitch_url` -> "OK": removed from both;
* `fs_api freeswitch_url command` -> the command's output (text, as freeswitch_esl's);
* `fs_bgapi freeswitch_url command` -> `{"Job-UUID": ...}`; the job's result is raised
  as E_FREESWITCH (name BACKGROUND_JOB, the same Job-UUID in its body);
* `fs_handover marks [jobs]` -> `{"Taken", "Replayed"}`: what a stopping bridge calls on
  its successor in a rolling restart (services/freeswitch/handover.py).

Errors: 404 unknown box, 400 bad URL/command, 503 link down, 408 no answer in time.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

from services.freeswitch.boxes import BoxUrlError, events_param, parse_fs_url
from services.freeswitch.bridge import Bridge, UnknownBox
from services.freeswitch.client import EslTimeout, EslUnavailable
from services.freeswitch.handover import decode_marks
from services.freeswitch.store import BoxStoreError
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, SERVICE_UNAVAILABLE, MiError
from shared.service.runtime import ServiceRuntime

TIMEOUT = 408


def _command_text(value: Any) -> str:
    if isinstance(value, list):
        value = " ".join(str(v) for v in value)
    return str(value).strip()


async def _run(coro: Any) -> Any:
    """Bridge errors as MI errors (never a traceback to the caller)."""
    try:
        return await coro
    except UnknownBox as exc:
        raise MiError(NOT_FOUND, f"FreeSWITCH box not found: {exc}") from None
    except (BoxUrlError, ValueError) as exc:
        raise MiError(BAD_REQUEST, str(exc)) from None
    except EslTimeout:
        raise MiError(TIMEOUT, "FreeSWITCH did not answer in time") from None
    except EslUnavailable as exc:
        raise MiError(SERVICE_UNAVAILABLE, f"ESL link down: {exc}") from None
    except BoxStoreError as exc:
        raise MiError(BAD_REQUEST, str(exc)) from None


def register_mi(runtime: ServiceRuntime, bridge: Bridge) -> None:
    @runtime.command("fs_list", doc="the FreeSWITCH boxes, their events and state")
    async def fs_list() -> Any:
        now = asyncio.get_running_loop().time()
        states = {s["id"]: s for s in bridge.states(now)}
        sockets = []
        for box, entry in bridge.boxes.items():
            state = states[box]
            client = entry.client
            sockets.append({
                "if": box, "Events": list(entry.events), "State": state["state"],
                "Group": entry.spec.group, "SIP": entry.spec.sip_uri,
                "Source": entry.spec.source,
                "Session-Count": state["session_count"],
                "Max-Sessions": state["max_sessions"],
                "Idle-CPU": round(state["idle_cpu"], 2),
                "Heartbeat-Age": round(state["heartbeat_age"], 3)
                if state["heartbeat_age"] >= 0 else None,
                "Reconnects": client.losses, "Error": client.last_error,
            })
        return {"Sockets": sockets}

    @runtime.command("fs_subscribe", (("freeswitch_url", "events"),),
                     doc="republish these events of a box (OpenSIPS freeswitch_scripting)")
    async def fs_subscribe(freeswitch_url: Any, events: Any) -> Any:
        names = events_param(events)
        if not names:
            raise MiError(BAD_REQUEST, "no event names")
        await _run(bridge.subscribe(str(freeswitch_url), names))
        return "OK"

    @runtime.command("fs_unsubscribe", (("freeswitch_url", "events"),),
                     doc="stop republishing these events of a box")
    async def fs_unsubscribe(freeswitch_url: Any, events: Any) -> Any:
        await _run(bridge.unsubscribe(str(freeswitch_url), events_param(events)))
        return "OK"

    @runtime.command("fs_handover", (("marks",), ("marks", "jobs")),
                     doc="a stopping bridge hands its events over (rolling restart)")
    async def fs_handover(marks: Any, jobs: Any = None) -> Any:
        try:
            decoded = decode_marks(marks)
        except ValueError as exc:
            raise MiError(BAD_REQUEST, str(exc)) from None
        if jobs is not None and (not isinstance(jobs, list) or
                                 not all(isinstance(j, str) for j in jobs)):
            raise MiError(BAD_REQUEST, "jobs: a list of Job-UUIDs")
        if not bridge.standby:
            return {"Taken": False, "Replayed": 0}
        replayed = bridge.take_over(decoded, jobs or ())
        return {"Taken": True, "Replayed": replayed}

    @runtime.command("fs_reload", doc="replace the boxes of the table with its content")
    async def fs_reload() -> Any:
        try:
            await bridge.reload()
        except RuntimeError as exc:
            raise MiError(BAD_REQUEST, str(exc)) from None
        return "OK"

    @runtime.command("fs_add", (("freeswitch_url",), ("freeswitch_url", "group"),
                                ("freeswitch_url", "group", "sip_uri")),
                     doc="add a FreeSWITCH box to the table and connect it")
    async def fs_add(freeswitch_url: Any, group: Any = None, sip_uri: Any = None) -> Any:
        try:
            spec = parse_fs_url(str(freeswitch_url), source="db")
        except BoxUrlError as exc:
            raise MiError(BAD_REQUEST, str(exc)) from None
        if group is not None and str(group).strip():
            spec = replace(spec, group=str(group).strip())
        if sip_uri is not None and str(sip_uri).strip():
            uri = str(sip_uri).strip()
            if not uri.lower().startswith(("sip:", "sips:")):
                raise MiError(BAD_REQUEST, f"not a SIP URI: {uri!r}")
            spec = replace(spec, sip_uri=uri)
        existing = bridge.boxes.get(spec.id)
        if existing is not None and existing.spec.source == "config":
            raise MiError(BAD_REQUEST, f"{spec.id} is set in the config file")
        try:
            await _run(bridge.add(spec, persist=True))
        except RuntimeError as exc:
            raise MiError(BAD_REQUEST, str(exc)) from None
        return "OK"

    @runtime.command("fs_remove", (("freeswitch_url",),),
                     doc="remove a FreeSWITCH box (table and link)")
    async def fs_remove(freeswitch_url: Any) -> Any:
        entry = await _run(_find(bridge, str(freeswitch_url)))
        if entry.spec.source == "config":
            raise MiError(BAD_REQUEST, f"{entry.spec.id} is set in the config file")
        await _run(bridge.remove(entry.spec.id))
        return "OK"

    @runtime.command("fs_api", (("freeswitch_url", "command"),),
                     doc="run an ESL api command on a box; its output")
    async def fs_api(freeswitch_url: Any, command: Any) -> Any:
        return await _run(bridge.api(str(freeswitch_url), _command_text(command)))

    @runtime.command("fs_bgapi", (("freeswitch_url", "command"),),
                     doc="start an ESL bgapi job on a box; its Job-UUID")
    async def fs_bgapi(freeswitch_url: Any, command: Any) -> Any:
        job, result, accepted = await _run(
            bridge.bgapi(str(freeswitch_url), _command_text(command)))
        if not accepted:
            raise MiError(BAD_REQUEST, f"FreeSWITCH refused the job: {result.result()}")
        return {"Job-UUID": job}

    runtime.stats.group("freeswitch", lambda: {
        "boxes": len(bridge.boxes),
        "boxes_up": sum(1 for e in bridge.boxes.values() if e.client.up),
        "reconnects": sum(e.client.losses for e in bridge.boxes.values()),
        "duplicates_dropped": sum(e.client.duplicates for e in bridge.boxes.values()),
        **bridge.stats,
    })


async def _find(bridge: Bridge, ref: str) -> Any:
    return bridge.find(ref)
