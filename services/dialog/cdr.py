"""A call's CDR, built from its ended dialog (OpenSIPS `acc` with `do_accounting("...",
"cdr|missed")`).

Fields are OpenSIPS 2.4's CDR fields - method, from_tag, to_tag, callid, sip_code,
sip_reason, time, duration, ms_duration, setuptime, created - plus what billing asks for:
caller and callee (From URI and Request-URI of the INVITE), the caller's source IP, the
destination the edge sent the INVITE to, why the call ended, and the extra fields set
from routing (`ctx.acc.extra`) or by other services (`SetExtra`, e.g. MOS).

* `time`: when the INVITE was handled (acc: the request's time); `created` the same,
  as the dialog is created by that INVITE;
* `setuptime`: seconds from the INVITE to its final reply;
* `duration` / `ms_duration`: from the 2xx to the end (BYE, timeout, dlg_end_dlg); 0 for a
  missed call.

`cdr_id` is the dialog's identity, `<Call-ID>;<From tag>`: the key of the idempotent insert,
so a retried or failed-over write never makes a second row.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from services.dialog.model import Dialog


def _uri_of(header_value: str) -> str:
    """The URI inside a From/To value (`"A" <sip:a@h>;tag=x` -> `sip:a@h`)."""
    start = header_value.find("<")
    if start >= 0:
        end = header_value.find(">", start)
        return header_value[start + 1:end if end > 0 else None]
    return header_value.split(";", 1)[0].strip()


def _hostless_uri(uri: str) -> str:
    """`sip:alice@example.com;transport=udp` -> `alice@example.com` (billing's account form)."""
    rest = uri.split(":", 1)[1] if ":" in uri else uri
    return rest.split(";", 1)[0].split("?", 1)[0]


def cdr_key(callid: str, from_tag: str) -> str:
    return f"{callid};{from_tag}"


@dataclasses.dataclass(frozen=True)
class Cdr:
    cdr_id: str
    method: str
    from_tag: str
    to_tag: str
    callid: str
    sip_code: int
    sip_reason: str
    time_ms: int
    duration: int
    ms_duration: int
    setuptime: int
    created_ms: int
    caller: str
    callee: str
    source_ip: str
    destination: str
    end_reason: str
    extra: dict[str, str]
    missed: bool
    node: int

    def event_params(self) -> dict[str, Any]:
        """The E_ACC_CDR / E_ACC_MISSED_EVENT parameters (OpenSIPS's names; extras as
        further keys, as `evi_extra` puts them), plus the CDR's key for deduplication."""
        params: dict[str, Any] = {}
        for name, value in self.extra.items():
            params[name] = value
        params.update({
            "method": self.method, "from_tag": self.from_tag, "to_tag": self.to_tag,
            "callid": self.callid, "sip_code": str(self.sip_code),
            "sip_reason": self.sip_reason, "time": self.time_ms // 1000,
            "duration": self.duration, "ms_duration": self.ms_duration,
            "setuptime": self.setuptime, "created": self.created_ms // 1000,
            "caller": self.caller, "callee": self.callee, "source_ip": self.source_ip,
            "destination": self.destination, "end_reason": self.end_reason,
            "cdr_id": self.cdr_id,
        })
        return params


def build_cdr(d: Dialog, node: int) -> Cdr:
    """The CDR of an ended dialog `d` (see the module docstring)."""
    answered = d.answered_ms > 0 and 200 <= d.sip_code < 300
    end = d.ended_ms or d.answered_ms or d.created_ms
    final_at = d.answered_ms if answered else end
    ms_duration = max(0, end - d.answered_ms) if answered else 0
    source = d.source.split(":")
    source_ip = ":".join(source[1:-1]) if len(source) >= 3 else d.source
    return Cdr(
        cdr_id=cdr_key(d.callid, d.from_tag), method="INVITE", from_tag=d.from_tag,
        to_tag=d.to_tag, callid=d.callid, sip_code=d.sip_code or 408,
        sip_reason=d.sip_reason or ("Request Timeout" if not d.sip_code else ""),
        time_ms=d.created_ms, duration=ms_duration // 1000, ms_duration=ms_duration,
        setuptime=max(0, final_at - d.created_ms) // 1000, created_ms=d.created_ms,
        caller=_hostless_uri(_uri_of(d.from_hdr)), callee=_hostless_uri(d.ruri),
        source_ip=source_ip.strip("[]"), destination=d.destination,
        end_reason=d.end_reason, extra=dict(d.extra or {}), missed=not answered, node=node)
