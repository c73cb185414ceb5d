"""The presence MI commands, with OpenSIPS's names and params (schemas in
contracts/mi/pres_*.json, subs_phtable_list.json, refresh_watchers.json, cleanup.json).

* `pres_phtable_list` -- `{"Presentities": [{pres_uri, event, etag, expires, sender,
  basic}]}`: one entry per live publication (`basic` is its first tuple's open/closed).
* `subs_phtable_list [from [to]]` -- `{"Subscriptions": [{pres_uri, event, from_user,
  from_domain, to_user, to_domain, callid, from_tag, to_tag, contact, local_contact,
  local_cseq, remote_cseq, expires, status, sharing_tag}]}`; `from` / `to` are shell
  wildcards (fnmatch) on the watcher's and the presentity's URI.
* `refresh_watchers pres_uri event [type]` (2.4 `refreshWatchers`) -- NOTIFY the
  presentity's watchers with its current state; "OK" (404 unknown event).
* `cleanup` -- run the expiry of publications and subscriptions now; "OK".
* `pres_expose event [filter]` -- raise one E_PRESENCE_EXPOSED per publication whose
  presentity URI matches the regular expression `filter`; "OK".
"""

from __future__ import annotations

import fnmatch
import re
import time
from typing import TYPE_CHECKING, Any

from services.presence import pidf
from services.presence.core import publish_event
from services.presence.subscriptions import PACKAGE
from shared.rpc.jsonrpc import BAD_REQUEST, NOT_FOUND, MiError

if TYPE_CHECKING:
    from services.presence.app import PresenceService


def _aor(uri: str) -> str:
    return uri.removeprefix("sip:").removeprefix("sips:").split(";", 1)[0].lower()


def register_mi(runtime: Any, svc: PresenceService) -> None:
    command = runtime.command
    core = svc.core

    async def pres_phtable_list() -> Any:
        now = time.time()
        out = []
        for pub in sorted(core.pubs, key=lambda p: (p.presentity, p.received_at)):
            out.append({"pres_uri": f"sip:{pub.presentity}", "event": pub.event,
                        "etag": pub.etag, "expires": max(0, round(pub.expires_at - now)),
                        "sender": pub.sender, "basic": pidf.basic_status(pub.body) or ""})
        return {"Presentities": out}

    command("pres_phtable_list", doc="the publications (OpenSIPS presence)")(pres_phtable_list)

    async def subs_phtable_list(**params: Any) -> Any:
        want_from = str(params.get("from") or "*")
        want_to = str(params.get("to") or "*")
        now = time.time()
        out = []
        for sub in sorted(core.subs, key=lambda s: (s.presentity, s.watcher, s.key)):
            if not (fnmatch.fnmatchcase(f"sip:{sub.watcher}", want_from)
                    and fnmatch.fnmatchcase(f"sip:{sub.presentity}", want_to)):
                continue
            from_user, _, from_domain = sub.watcher.rpartition("@")
            to_user, _, to_domain = sub.presentity.rpartition("@")
            out.append({
                "pres_uri": f"sip:{sub.presentity}", "event": sub.event,
                "from_user": from_user, "from_domain": from_domain, "to_user": to_user,
                "to_domain": to_domain, "callid": sub.call_id, "from_tag": sub.from_tag,
                "to_tag": sub.to_tag, "contact": sub.contact,
                "local_contact": sub.local_contact, "local_cseq": sub.local_cseq,
                "remote_cseq": sub.remote_cseq,
                "expires": max(0, round(sub.expires_at - now)), "status": sub.status,
                "sharing_tag": sub.sharing_tag})
        return {"Subscriptions": out}

    command("subs_phtable_list", ((), ("from",), ("from", "to")),
            doc="the subscriptions (OpenSIPS presence)")(subs_phtable_list)

    async def refresh_watchers(pres_uri: Any, event: Any, type: Any = None) -> Any:
        if str(event).split(";")[0].strip().lower() != PACKAGE:
            raise MiError(NOT_FOUND, "unknown event")
        if type is not None and str(type) not in ("0", "1"):
            raise MiError(BAD_REQUEST, "type must be 0 (content) or 1 (rules)")
        await svc.apply(core.refresh_watchers(_aor(str(pres_uri)), PACKAGE, time.time()))
        return "OK"

    recipes = (("pres_uri", "event"), ("pres_uri", "event", "type"))
    command("refresh_watchers", recipes,
            doc="NOTIFY a presentity's watchers again")(refresh_watchers)
    command("refreshWatchers", recipes,
            doc="2.4 name of refresh_watchers")(refresh_watchers)

    async def cleanup() -> Any:
        await svc.tick()
        return "OK"

    command("cleanup", doc="expire publications and subscriptions now")(cleanup)

    async def pres_expose(event: Any, filter: Any = None) -> Any:
        if str(event).strip().lower() != PACKAGE:
            raise MiError(NOT_FOUND, "unknown event")
        try:
            pattern = re.compile(str(filter)) if filter is not None else None
        except re.error as exc:
            raise MiError(BAD_REQUEST, f"bad filter: {exc}") from None
        now = time.time()
        for pub in sorted(core.pubs, key=lambda p: (p.presentity, p.received_at)):
            if pattern is None or pattern.search(f"sip:{pub.presentity}"):
                if svc.events is not None:
                    svc.events.publish("E_PRESENCE_EXPOSED", publish_event(
                        pub, max(0, round(pub.expires_at - now))))
        return "OK"

    command("pres_expose", (("event",), ("event", "filter")),
            doc="raise E_PRESENCE_EXPOSED for the matching presentities")(pres_expose)
