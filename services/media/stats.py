"""Call statistics out of rtpengine's `delete` (or `query`) reply (pure).

rtpengine reports, under `SSRC.<decimal ssrc>`, the quality seen from the RTCP reports
**sent by that SSRC's endpoint** (rtpengine 10.5, tried here): `average MOS`, `lowest MOS`
and `highest MOS` blocks, each with `MOS` (x10: 43 means 4.3), `round-trip time` (us),
`jitter`, `packet loss` (percent), and `reported at` (unix time) for the lowest and
highest; `cumulative loss` (packets).  `totals` holds the RTP and RTCP packet, byte and
error counters; `tags.<tag>.medias[].streams[].SSRC` says which SSRC belongs to which side.

OpenSIPS 2.4 exposes these as `$rtpstat(MOS-average|MOS-min|MOS-max|MOS-min-at|
MOS-max-at)[tag]` (OpenSIPS 3 adds `jitter-*`, `roundtrip-*`, `packetloss-*` read from the
same blocks); `rtpstat()` computes exactly those, the same way (modules/rtpengine,
`pv_handle_rtpstat`):

* average: the integer mean of every SSRC's `average MOS` value (None when there is none,
  or when they are all 0: no SR was seen, so no MOS);
* min / max: the lowest `lowest MOS` / highest `highest MOS` over the SSRCs; `-at` is its
  `reported at` minus the call's `created` (seconds from the start of the call);
* with a tag, only the SSRCs of that tag's streams count.

`call_stats()` gathers them all (plus the counters and the summed `cumulative loss`) into
`CallStats`, whose `acc_extra()` is the flat name -> value map a CDR stores.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# OpenSIPS 3 stat names -> (block key inside "average/lowest/highest MOS", value key)
STAT_FIELDS = {"mos": "MOS", "jitter": "jitter", "roundtrip": "round-trip time",
               "packetloss": "packet loss"}
_BLOCKS = {"average": "average MOS", "min": "lowest MOS", "max": "highest MOS"}


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def tag_ssrcs(reply: Mapping[str, Any], tag: str) -> set[str] | None:
    """The SSRCs (decimal strings) of `tag`'s streams; None when the tag is unknown."""
    entry = _dict(_dict(reply.get("tags")).get(tag))
    if not entry:
        return None
    found: set[str] = set()
    for media in entry.get("medias") or ():
        for stream in _dict(media).get("streams") or ():
            ssrc = _int(_dict(stream).get("SSRC"))
            if ssrc is not None:
                found.add(str(ssrc))
    return found


def rtpstat(reply: Mapping[str, Any], name: str, tag: str | None = None) -> int | None:
    """`$rtpstat(NAME)[tag]`: NAME is `MOS-average`, `MOS-min`, `MOS-max`, `MOS-min-at`,
    `MOS-max-at` (or `jitter-`, `roundtrip-`, `packetloss-` the same way), case-insensitive.
    None where OpenSIPS gives NULL."""
    kind, _, which = name.lower().partition("-")
    at = which.endswith("-at")
    which = which.removesuffix("-at")
    if kind not in STAT_FIELDS or which not in _BLOCKS or (at and which == "average"):
        raise ValueError(f"unknown RTP statistic {name!r}")
    value_key = STAT_FIELDS[kind]
    created = _int(reply.get("created"))
    if at and created is None:
        return None
    wanted = tag_ssrcs(reply, tag) if tag is not None else None
    if tag is not None and wanted is None:
        return None
    total = count = 0
    best: int | None = None
    best_at: int | None = None
    for ssrc, entry in _dict(reply.get("SSRC")).items():
        if wanted is not None and str(ssrc) not in wanted:
            continue
        block = _dict(_dict(entry).get(_BLOCKS[which]))
        value = _int(block.get(value_key))
        if value is None:
            continue
        if which == "average":
            total += value
            count += 1
        elif best is None or (value < best if which == "min" else value > best):
            best = value
            reported = _int(block.get("reported at"))
            best_at = None if reported is None or created is None else reported - created
    if which == "average":
        # 2.4 returns NULL when the sum is 0 (no SR seen yet gives MOS 0 everywhere)
        return total // count if count and (total or kind != "mos") else None
    return best_at if at else best


@dataclass(frozen=True)
class CallStats:
    """What a delete reply says about the call (None = rtpengine did not report it)."""

    mos_average: int | None = None
    mos_min: int | None = None
    mos_min_at: int | None = None
    mos_max: int | None = None
    mos_max_at: int | None = None
    jitter_average: int | None = None
    roundtrip_average: int | None = None
    packetloss_average: int | None = None
    packets_lost: int | None = None
    rtp_packets: int = 0
    rtp_bytes: int = 0
    rtp_errors: int = 0
    rtcp_packets: int = 0
    rtcp_bytes: int = 0
    rtcp_errors: int = 0
    by_tag: dict[str, dict[str, int | None]] = field(default_factory=dict)

    def acc_extra(self, prefix: str = "") -> dict[str, int]:
        """Flat name -> value for a CDR's extra fields (unreported values left out)."""
        out: dict[str, int] = {}
        for name in ("mos_average", "mos_min", "mos_min_at", "mos_max", "mos_max_at",
                     "jitter_average", "roundtrip_average", "packetloss_average",
                     "packets_lost", "rtp_packets", "rtp_bytes", "rtp_errors",
                     "rtcp_packets", "rtcp_bytes", "rtcp_errors"):
            value = getattr(self, name)
            if value is not None:
                out[prefix + name] = value
        return out

    @property
    def rtpstat_line(self) -> str:
        """`$rtpstat` without a name: OpenSIPS's one-line summary."""
        return (f"RTP: {self.rtp_bytes} bytes, {self.rtp_packets} packets, "
                f"{self.rtp_errors} errors; RTCP: {self.rtcp_bytes} bytes, "
                f"{self.rtcp_packets} packets, {self.rtcp_errors} errors")


def _mos_group(reply: Mapping[str, Any], tag: str | None) -> dict[str, int | None]:
    return {key.replace("-", "_").lower(): rtpstat(reply, key, tag)
            for key in ("MOS-average", "MOS-min", "MOS-min-at", "MOS-max", "MOS-max-at")}


def call_stats(reply: Mapping[str, Any], tags: Iterable[str] = ()) -> CallStats:
    """Every statistic of a delete/query reply; `tags` adds per-tag MOS values (by default
    every tag in the reply)."""
    totals = _dict(reply.get("totals"))
    rtp, rtcp = _dict(totals.get("RTP")), _dict(totals.get("RTCP"))
    lost = [_int(_dict(e).get("cumulative loss")) for e in _dict(reply.get("SSRC")).values()]
    known_lost = [n for n in lost if n is not None]
    names = list(tags) or [str(t) for t in _dict(reply.get("tags"))]
    mos = _mos_group(reply, None)
    return CallStats(
        mos_average=mos["mos_average"], mos_min=mos["mos_min"], mos_min_at=mos["mos_min_at"],
        mos_max=mos["mos_max"], mos_max_at=mos["mos_max_at"],
        jitter_average=rtpstat(reply, "jitter-average"),
        roundtrip_average=rtpstat(reply, "roundtrip-average"),
        packetloss_average=rtpstat(reply, "packetloss-average"),
        packets_lost=sum(known_lost) if known_lost else None,
        rtp_packets=_int(rtp.get("packets")) or 0, rtp_bytes=_int(rtp.get("bytes")) or 0,
        rtp_errors=_int(rtp.get("errors")) or 0, rtcp_packets=_int(rtcp.get("packets")) or 0,
        rtcp_bytes=_int(rtcp.get("bytes")) or 0, rtcp_errors=_int(rtcp.get("errors")) or 0,
        by_tag={tag: _mos_group(reply, tag) for tag in names},
    )
