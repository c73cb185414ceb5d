"""The SIPREC INVITE's body, sans-IO: labelled SDP and the multipart/mixed container.

RFC 7866 §7 (and its examples, RFC 8068): the SRC's offer is `multipart/mixed` with an
`application/sdp` part (one m-line per recorded stream, each with `a=label`, RFC 4574,
and `a=sendonly`: the SRC only sends, §8.1.1) and an `application/rs-metadata+xml` part
carrying `Content-Disposition: recording-session` (RFC 7866 §9; the media type is
RFC 9806's correction of 7866's `application/rs-metadata`, both accepted when parsing).
rtpengine's `subscribe request` SDP has no labels: `label_sdp` adds them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

METADATA_TYPE = "application/rs-metadata+xml"
METADATA_TYPES = frozenset({METADATA_TYPE, "application/rs-metadata"})  # RFC 9806 §3
DISPOSITION = "recording-session"
_DIRECTIONS = ("a=sendrecv", "a=recvonly", "a=sendonly", "a=inactive")


class BodyError(ValueError):
    """A body that is not what RFC 7866 asks for."""


def media_count(sdp: str) -> int:
    return sum(1 for line in sdp.splitlines() if line.startswith("m="))


def label_sdp(sdp: str, labels: Sequence[str]) -> str:
    """`sdp` with `a=label:<labels[i]>` in its i-th media section and every section
    `a=sendonly` (RFC 7866 §8.1.1: the SRC sends, the SRS receives); an existing label
    or direction attribute is replaced.  BodyError when the counts differ."""
    lines = [line for line in sdp.replace("\r\n", "\n").split("\n") if line]
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    media = sections[1:]
    if len(media) != len(labels):
        raise BodyError(f"{len(media)} media sections for {len(labels)} labels")
    out = list(sections[0])
    for section, label in zip(media, labels, strict=True):
        if not re.fullmatch(r"[A-Za-z0-9_.~-]{1,64}", label):
            raise BodyError(f"bad label {label!r}")  # RFC 4574 §4: a token
        kept = [line for line in section[1:]
                if not line.startswith("a=label:") and line not in _DIRECTIONS]
        out += [section[0], *kept, f"a=label:{label}", "a=sendonly"]
    return "\r\n".join(out) + "\r\n"


def hold_sdp(sdp: str, held: Sequence[str], version: int) -> str:
    """The labelled offer `sdp` as a new offer in its session (RFC 3264 §8): the `o=`
    session version set to `version` (it must grow with each new offer, §8), and each
    media section whose label is in `held` `a=inactive` instead of `a=sendonly` (RFC 7866
    §8.1.2: a CS stream on hold is not sent, so its RS stream is inactive)."""
    out: list[str] = []
    label: str | None = None
    section: list[str] = []

    def flush() -> None:
        if label is not None and label in held:
            section[:] = ["a=inactive" if line in _DIRECTIONS else line for line in section]
        out.extend(section)
        section.clear()

    for line in sdp.replace("\r\n", "\n").split("\n"):
        if not line:
            continue
        if line.startswith("o="):
            fields = line.split(" ")
            if len(fields) >= 3:
                fields[2] = str(version)
                line = " ".join(fields)
        if line.startswith("m="):
            flush()
            label = None
        elif line.startswith("a=label:"):
            label = line[8:].strip()
        section.append(line)
    flush()
    return "\r\n".join(out) + "\r\n"


def sdp_directions(sdp: str) -> dict[str, str]:
    """label -> direction attribute of each labelled media section (sendrecv when none)."""
    found: dict[str, str] = {}
    label: str | None = None
    direction = "sendrecv"
    for line in [*sdp.splitlines(), "m="]:
        if line.startswith("m="):
            if label is not None:
                found[label] = direction
            label, direction = None, "sendrecv"
        elif line.startswith("a=label:"):
            label = line[8:].strip()
        elif line in _DIRECTIONS:
            direction = line[2:]
    return found


def sdp_labels(sdp: str) -> list[str | None]:
    """The label of each media section, in order (None where it has none)."""
    found: list[str | None] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            found.append(None)
        elif line.startswith("a=label:") and found:
            found[-1] = line[8:].strip()
    return found


def multipart(sdp: str, metadata: str, boundary: str) -> tuple[str, bytes]:
    """(Content-Type, body) of the RFC 7866 §7 offer: SDP first, then the metadata."""
    if not re.fullmatch(r"[A-Za-z0-9'()+_,./:=?-]{1,70}", boundary):
        raise BodyError("bad boundary")  # RFC 2046 §5.1.1 bchars (no space)
    parts = [
        f"--{boundary}\r\nContent-Type: application/sdp\r\n\r\n{sdp}",
        f"--{boundary}\r\nContent-Type: {METADATA_TYPE}\r\n"
        f"Content-Disposition: {DISPOSITION}\r\n\r\n{metadata}",
    ]
    # RFC 2046 §5.1.1: the CRLF before each delimiter belongs to the delimiter, so every
    # part is followed by one (an SDP's own last CRLF stays in the SDP).
    text = "".join(p + "\r\n" for p in parts)
    return f"multipart/mixed;boundary={boundary}", (text + f"--{boundary}--\r\n").encode()


@dataclass(frozen=True)
class Part:
    content_type: str
    disposition: str
    body: str


def _param(value: str, name: str) -> str | None:
    for piece in value.split(";")[1:]:
        key, _, val = piece.strip().partition("=")
        if key.strip().lower() == name:
            return val.strip().strip('"')
    return None


def parse_multipart(content_type: str, body: bytes) -> list[Part]:
    """The parts of a multipart/mixed body (RFC 2046 §5.1); BodyError when it is not."""
    if not content_type.split(";")[0].strip().lower().startswith("multipart/"):
        raise BodyError(f"not multipart: {content_type!r}")
    boundary = _param(content_type, "boundary")
    if not boundary:
        raise BodyError("multipart without boundary")
    text = body.decode("utf-8", "replace")
    delimiter = f"--{boundary}"
    pieces = text.split(delimiter)
    if len(pieces) < 3:
        raise BodyError("no parts")
    parts: list[Part] = []
    for piece in pieces[1:]:
        if piece.startswith("--"):
            break  # the close delimiter
        piece = piece[2:] if piece.startswith("\r\n") else piece.lstrip("\n")
        head, sep, content = piece.partition("\r\n\r\n")
        if not sep:
            head, sep, content = piece.partition("\n\n")
        headers: dict[str, str] = {}
        for line in head.splitlines():
            name, colon, value = line.partition(":")
            if colon:
                headers[name.strip().lower()] = value.strip()
        if content.endswith("\r\n"):
            content = content[:-2]  # the CRLF before the next delimiter belongs to it
        parts.append(Part(headers.get("content-type", "text/plain").lower(),
                          headers.get("content-disposition", "").lower(), content))
    return parts


def split_offer(content_type: str, body: bytes) -> tuple[str, str]:
    """(SDP, metadata XML) of an RFC 7866 offer; BodyError when one is missing."""
    sdp = metadata = None
    for part in parse_multipart(content_type, body):
        kind = part.content_type.split(";")[0].strip()
        if kind == "application/sdp":
            sdp = part.body
        elif kind in METADATA_TYPES:
            if part.disposition.split(";")[0].strip() != DISPOSITION:
                raise BodyError("metadata part without Content-Disposition: recording-session")
            metadata = part.body
    if sdp is None or metadata is None:
        raise BodyError("an RFC 7866 offer has an SDP part and a metadata part")
    return sdp, metadata
