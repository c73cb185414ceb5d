"""A Session Recording Server stand-in, written from RFC 7866 / 7865 (no SRS package runs
here): a UDP SIP UAS that checks each recording INVITE the way an SRS must, answers it,
and counts the forked RTP it receives.

For each INVITE it checks (RFC 7866 §6.1.1, §7, §8.1.1, §9; RFC 7865 §6; RFC 9806): an
option-tag `siprec` in Require, `+sip.src` in the Contact, a `multipart/mixed` body with
an `application/sdp` part and an `application/rs-metadata+xml` (or `application/
rs-metadata`) part with `Content-Disposition: recording-session`, metadata that parses
with every reference resolved (services/siprec/metadata.parse_metadata), every SDP
m-line `a=sendonly` with an `a=label` that a metadata `<stream>` names, and the reverse.
A compliant INVITE gets 200 with one `a=recvonly` m-line per offered stream, on a UDP
port of its own (the offered payload types echoed, as rtpengine 10.5 wants every one of
them answered) -- or `status` when the test scripts a refusal; one that fails a check
gets 488 with the problems in a Warning and in `problems`.  A re-INVITE in the session
(the SRC following a hold, RFC 7866 §8.1.2) gets the same checks (no Require needed, an
m-line may be `a=inactive`) and 200 with the held streams inactive; each is kept in
`updates` (metadata, label -> direction).  `bye(call_id)` ends a session from the SRS
side (RFC 7866 §7.1.2).  ACK and BYE (200) end the story; `sessions[call_id]` keeps it
for the test: the INVITE, the parsed metadata, the labels, the RTP packets and SSRCs per
label, acked, ended.

    python -m services.siprec.testing.fake_srs --port 5090    # by hand; prints each event
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
from dataclasses import dataclass, field
from typing import Any

from services.siprec.body import BodyError, sdp_directions, sdp_labels, split_offer
from services.siprec.metadata import MetadataError, Parsed, parse_metadata
from shared.sip import Request, make_response, parse_message


@dataclass
class SrsSession:
    call_id: str
    invite: Request
    problems: list[str]
    metadata: Parsed | None = None
    labels: list[str] = field(default_factory=list)
    status: int = 0
    acked: bool = False
    ended: bool = False
    # The BYE transactions (Via branches) received in the RS dialog: a recording is ended
    # once; a retransmission is the same transaction.
    byes: set[str] = field(default_factory=set)
    rtp: dict[str, int] = field(default_factory=dict)  # label -> packets
    ssrcs: dict[str, set[int]] = field(default_factory=dict)  # label -> SSRCs seen
    response: bytes = b""
    answer: str = ""  # our SDP answer
    src_contact: str = ""
    addr: tuple[str, int] = ("", 0)
    cseq: int = 0  # our own CSeq in the RS dialog
    tag: str = ""
    updates: list[tuple[Parsed | None, dict[str, str], list[str]]] = field(
        default_factory=list)  # (metadata, label -> direction, problems)


class _Rtp(asyncio.DatagramProtocol):
    def __init__(self, session: SrsSession, label: str) -> None:
        self.session = session
        self.label = label

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        if len(data) >= 12 and data[0] >> 6 == 2 and not 200 <= data[1] <= 204:  # RTP only
            self.session.rtp[self.label] = self.session.rtp.get(self.label, 0) + 1
            self.session.ssrcs.setdefault(self.label, set()).add(
                int.from_bytes(data[8:12], "big"))


class _Sip(asyncio.DatagramProtocol):
    def __init__(self, srs: FakeSrs) -> None:
        self.srs = srs

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.srs._on_datagram(data, addr)


def check_invite(req: Request, *, update: bool = False
                 ) -> tuple[list[str], Parsed | None, list[str], str]:
    """(problems, metadata, SDP labels, SDP) of a recording INVITE (module docstring);
    `update`: a re-INVITE in the session (no Require, inactive m-lines allowed)."""
    problems: list[str] = []
    requires = {t.strip().lower() for v in req.get_all("Require") for t in v.split(",")}
    if "siprec" not in requires and not update:
        problems.append("no Require: siprec")  # RFC 7866 §6.1.1
    contact = req.get("Contact") or ""
    if not re.search(r">\s*;(.*;)?\s*\+sip\.src\b", contact):
        problems.append("Contact without +sip.src")  # RFC 7866 §6.1.1
    content_type = req.content_type or ""
    if not content_type.lower().startswith("multipart/mixed"):
        problems.append(f"Content-Type {content_type!r} is not multipart/mixed")
        return problems, None, [], ""
    try:
        sdp, xml = split_offer(content_type, req.body)
    except BodyError as exc:
        problems.append(str(exc))
        return problems, None, [], ""
    if re.search(r"rs-metadata(\+xml)?", req.body.decode("utf-8", "replace")) is None:
        problems.append("no rs-metadata part")
    metadata: Parsed | None = None
    try:
        metadata = parse_metadata(xml)
    except MetadataError as exc:
        problems.append(f"metadata: {exc}")
    labels = sdp_labels(sdp)
    if any(label is None for label in labels):
        problems.append("an m-line without a=label")  # RFC 7866 §8.1.1
    sections = re.split(r"\r?\nm=", sdp)[1:]
    allowed = ("a=sendonly", "a=inactive") if update else ("a=sendonly",)
    if any(not any(a in s for a in allowed) for s in sections):
        problems.append("an m-line that is not a=sendonly")
    found = [label for label in labels if label is not None]
    if metadata is not None and set(found) != set(metadata.labels.values()):
        problems.append(f"SDP labels {found} != metadata streams "
                        f"{sorted(metadata.labels.values())}")
    return problems, metadata, found, sdp


class FakeSrs:
    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, status: int = 200,
                 verbose: bool = False) -> None:
        self.host = host
        self.port = port
        self.status = status  # what a compliant INVITE gets (e.g. 503 to test failover)
        self.verbose = verbose
        self.sessions: dict[str, SrsSession] = {}
        self.invites = 0
        self._transport: asyncio.DatagramTransport | None = None
        self._media: list[asyncio.DatagramTransport] = []
        self._waiting: dict[str, asyncio.Future[int]] = {}

    @property
    def uri(self) -> str:
        return f"sip:srs@{self.host}:{self.port}"

    async def start(self) -> FakeSrs:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Sip(self), local_addr=(self.host, self.port))
        self._transport = transport
        self.port = transport.get_extra_info("sockname")[1]
        return self

    def close(self) -> None:
        for t in [self._transport, *self._media]:
            if t is not None:
                t.close()

    def _send(self, data: bytes, addr: tuple[str, int]) -> None:
        if self._transport is not None:
            self._transport.sendto(data, addr)

    def _reply_to(self, req: Request, addr: tuple[str, int]) -> tuple[str, int]:
        via = req.top_via
        port = via.params.get("rport") or via.port or 5060
        host = via.params.get("received") or via.host
        with contextlib.suppress(ValueError, TypeError):
            return str(host), int(port)
        return addr

    def _on_datagram(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            msg = parse_message(data)
        except Exception:
            return
        if not isinstance(msg, Request):
            branch = str(msg.top_via.params.get("branch") or "")
            waiter = self._waiting.get(branch)
            if waiter is not None and not waiter.done() and msg.status >= 200:
                waiter.set_result(msg.status)
            return
        session = self.sessions.get(msg.call_id)
        if msg.method == "INVITE" and msg.to_tag is not None:
            self._reinvite(msg, session, addr)
        elif msg.method == "INVITE" and msg.to_tag is None:
            if session is not None and session.response:
                self._send(session.response, self._reply_to(msg, addr))  # retransmission
                return
            asyncio.get_running_loop().create_task(self._invite(msg, addr))
        elif msg.method == "ACK":
            if session is not None:
                session.acked = True
        elif msg.method == "BYE":
            status = 200 if session is not None else 481
            if session is not None:
                session.ended = True
                session.byes.add(str(msg.top_via.params.get("branch") or ""))
                if self.verbose:
                    print(f"BYE {msg.call_id} rtp {session.rtp}", flush=True)
            self._send(make_response(msg, status).serialize(), self._reply_to(msg, addr))
        elif msg.method != "ACK":
            self._send(make_response(msg, 501).serialize(), self._reply_to(msg, addr))

    async def _invite(self, req: Request, addr: tuple[str, int]) -> None:
        self.invites += 1
        problems, metadata, labels, sdp = check_invite(req)
        session = SrsSession(req.call_id, req, problems, metadata, labels)
        self.sessions[req.call_id] = session
        tag = os.urandom(4).hex()
        if problems:
            status = 488
            response = make_response(req, 488, to_tag=tag, headers=[
                ("Warning", '399 srs "' + "; ".join(problems).replace('"', "'") + '"')])
        elif self.status != 200:
            status = self.status
            response = make_response(req, status, to_tag=tag)
        else:
            status = 200
            answer = await self._answer_sdp(session, sdp)
            headers = [("Contact", f"<sip:srs@{self.host}:{self.port}>"),
                       ("Content-Type", "application/sdp")]
            headers += [("Record-Route", v) for v in req.get_all("Record-Route")]
            response = make_response(req, 200, to_tag=tag, headers=headers,
                                     body=answer.encode())
            session.answer, session.tag = answer, tag
            contact = req.get("Contact") or ""
            session.src_contact = contact.split("<", 1)[-1].split(">", 1)[0]
        session.status = status
        session.response = response.serialize()
        if self.verbose:
            print(f"INVITE {req.call_id} -> {status} labels {labels} problems {problems}",
                  flush=True)
        self._send(session.response, self._reply_to(req, addr))

    def _reinvite(self, req: Request, session: SrsSession | None,
                  addr: tuple[str, int]) -> None:
        if session is None or session.ended or not session.answer:
            self._send(make_response(req, 481).serialize(), self._reply_to(req, addr))
            return
        problems, metadata, _, sdp = check_invite(req, update=True)
        directions = sdp_directions(sdp)
        session.updates.append((metadata, directions, problems))
        if problems:
            self._send(make_response(req, 488).serialize(), self._reply_to(req, addr))
            return
        # RFC 3264 §8: the answer's o= version grows; inactive where the offer is
        version = len(session.updates) + 1
        answer = session.answer.replace(" 1 1 IN IP4", f" 1 {version} IN IP4", 1)
        out: list[str] = []
        label = ""
        for line in answer.split("\r\n"):
            if line.startswith("a=label:"):
                label = line[8:]
            if line == "a=recvonly" and directions.get(label) == "inactive":
                line = "a=inactive"
            out.append(line)
        headers = [("Contact", f"<sip:srs@{self.host}:{self.port}>"),
                   ("Content-Type", "application/sdp")]
        self._send(make_response(req, 200, to_tag=session.tag, headers=headers,
                                 body="\r\n".join(out).encode()).serialize(),
                   self._reply_to(req, addr))
        if self.verbose:
            print(f"re-INVITE {req.call_id} {directions}", flush=True)

    async def bye(self, call_id: str, timeout: float = 10.0) -> int:
        """The SRS ends the session (RFC 7866 §7.1.2): BYE to the SRC's Contact; the
        status of the answer (0: none within `timeout`)."""
        session = self.sessions[call_id]
        uri = session.src_contact
        hostport = uri.split("@", 1)[-1].split(";", 1)[0]
        host, _, port = hostport.rpartition(":")
        session.cseq += 1
        invite = session.invite
        branch = "z9hG4bK" + os.urandom(6).hex()
        headers = [("Via", f"SIP/2.0/UDP {self.host}:{self.port};branch={branch};rport"),
                   ("Max-Forwards", "70"),
                   ("From", f"{invite.get('To')};tag={session.tag}"),
                   ("To", invite.get("From") or ""), ("Call-ID", call_id),
                   ("CSeq", f"{session.cseq} BYE")]
        waiter: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self._waiting[branch] = waiter
        self._send(Request("BYE", uri, headers, b"").serialize(), (host, int(port or 5060)))
        try:
            status = await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            status = 0
        finally:
            self._waiting.pop(branch, None)
        if 200 <= status < 300:
            session.ended = True
        return status

    async def _answer_sdp(self, session: SrsSession, offer: str) -> str:
        loop = asyncio.get_running_loop()
        lines = ["v=0", f"o=srs 1 1 IN IP4 {self.host}", "s=srs", f"c=IN IP4 {self.host}",
                 "t=0 0"]
        media = re.findall(r"^m=audio \d+ (\S+) ([^\r\n]*)", offer, re.M)
        for (proto, formats), label in zip(media, session.labels, strict=False):
            transport, _ = await loop.create_datagram_endpoint(
                lambda lb=label: _Rtp(session, lb),  # type: ignore[misc]
                local_addr=(self.host, 0))
            self._media.append(transport)
            port = transport.get_extra_info("sockname")[1]
            lines += [f"m=audio {port} {proto} {formats.strip()}", f"a=label:{label}",
                      "a=recvonly"]
        return "\r\n".join(lines) + "\r\n"


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m services.siprec.testing.fake_srs")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5090)
    p.add_argument("--status", type=int, default=200)
    args = p.parse_args()

    async def run() -> Any:
        srs = await FakeSrs(args.host, args.port, status=args.status, verbose=True).start()
        print(f"fake SRS at {srs.uri}", flush=True)
        await asyncio.Event().wait()

    asyncio.run(run())


if __name__ == "__main__":
    main()
