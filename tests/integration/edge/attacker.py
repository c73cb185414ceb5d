"""An attacker on an untrusted address, run inside the test's network namespace.

    ip netns exec NS python attacker.py EDGE_PORT ATTACKER_IP CALLEE_AOR [start|bye FILE]

Binds ATTACKER_IP (outside `[edge] trusted`) and, as "a loopback service" the attacker
wants to reach through the edge, 127.0.0.1:5090.  It tries the relays of issue 12 and
prints one JSON object: the status the edge answered to each attempt, and how many
datagrams reached the loopback service (must be none).

1. a preloaded Route `<edge;lr>, <127.0.0.1:5090;lr>` on an initial INVITE;
2. the same with a made-up To tag (an "in-dialog" request of no dialog);
3. a made-up Record-Route signature on it;
4. a real dialog: the attacker calls CALLEE_AOR (a registered local user, allowed without
   credentials), gets the 200 with the edge's signed Record-Route, ACKs it; then it
   reuses that signed Route aimed at the loopback service (refused), and at last sends
   the dialog's own BYE, which must go through.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from collections.abc import Sequence

EDGE = ("127.0.0.1", int(sys.argv[1]))
ME = sys.argv[2]
CALLEE = sys.argv[3]
SERVICE = ("127.0.0.1", 5090)


def request(method: str, uri: str, n: str, *, to_tag: str = "", routes: Sequence[str] = (),
            cseq: int = 1, call_id: str = "", port: int) -> bytes:
    lines = [f"{method} {uri} SIP/2.0",
             f"Via: SIP/2.0/UDP {ME}:{port};branch=z9hG4bK-evil{n};rport",
             *(f"Route: {r}" for r in routes),
             "Max-Forwards: 70",
             f"From: <sip:mallory@evil.example>;tag=m{call_id or n}",
             f"To: <{uri}>" + (f";tag={to_tag}" if to_tag else ""),
             f"Call-ID: {call_id or 'evil-' + n}", f"CSeq: {cseq} {method}",
             f"Contact: <sip:mallory@{ME}:{port}>", "Content-Length: 0", "", ""]
    return "\r\n".join(lines).encode()


def final(sock: socket.socket, timeout: float = 5.0) -> bytes | None:
    sock.settimeout(timeout)
    try:
        while True:
            data, _ = sock.recvfrom(65535)
            if not data.startswith(b"SIP/2.0 1"):
                return data
    except TimeoutError:
        return None


def status(data: bytes | None) -> int | None:
    return None if data is None else int(data.split(b" ", 2)[1])


def header_values(data: bytes, name: bytes) -> list[str]:
    out: list[str] = []
    for line in data.split(b"\r\n"):
        key, _, value = line.partition(b":")
        if key.strip().lower() == name.lower():
            out.extend(v.strip() for v in value.decode().split(","))
    return out


def dialog(mode: str, state: str) -> None:
    """`start`: call CALLEE and keep the dialog in the JSON file `state`; `bye`: end it
    (after the edge restarted, say) along the route set the 200 gave."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ME, 0))
    port = sock.getsockname()[1]
    if mode == "start":
        call_id = f"kept-{time.monotonic_ns()}"
        sock.sendto(request("INVITE", f"sip:{CALLEE}", "k1", call_id=call_id, port=port), EDGE)
        ok = final(sock, 10)
        assert ok is not None and status(ok) == 200, ok
        tag = next(v for v in header_values(ok, b"To")[0].split(";") if v.startswith("tag="))[4:]
        routes = header_values(ok, b"Record-Route")
        contact = header_values(ok, b"Contact")[0].strip("<>").split(";")[0]
        sock.sendto(request("ACK", contact, "k2", to_tag=tag, routes=routes, call_id=call_id,
                            port=port), EDGE)
        with open(state, "w") as fh:
            json.dump({"call_id": call_id, "tag": tag, "routes": routes, "contact": contact},
                      fh)
        print(json.dumps({"call": 200}), flush=True)
        return
    with open(state) as fh:
        d = json.load(fh)
    sock.sendto(request("BYE", d["contact"], "k3", to_tag=d["tag"], routes=d["routes"],
                        call_id=d["call_id"], cseq=2, port=port), EDGE)
    print(json.dumps({"bye": status(final(sock, 10))}), flush=True)


def main() -> None:
    service = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    service.bind(SERVICE)
    service.setblocking(False)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((ME, 0))
    port = sock.getsockname()[1]
    edge_route = f"<sip:{EDGE[0]}:{EDGE[1]};lr>"
    target = f"<sip:{SERVICE[0]}:{SERVICE[1]};lr>"
    out: dict[str, object] = {}

    def attempt(name: str, data: bytes) -> None:
        sock.sendto(data, EDGE)
        out[name] = status(final(sock))

    attempt("preloaded_route", request("INVITE", "sip:x@example.org", "1",
                                       routes=[edge_route, target], port=port))
    attempt("forged_to_tag", request("BYE", "sip:x@127.0.0.1:5090", "2", to_tag="forged",
                                     routes=[edge_route, target], port=port))
    attempt("forged_signature", request(
        "BYE", "sip:x@127.0.0.1:5090", "3", to_tag="forged", port=port,
        routes=[f"<sip:{EDGE[0]}:{EDGE[1]};lr;sg=0123456789abcdef0123>", target]))
    # A real dialog with a registered local user.
    call_id = f"real-{time.monotonic_ns()}"
    sock.sendto(request("INVITE", f"sip:{CALLEE}", "4", call_id=call_id, port=port), EDGE)
    ok = final(sock, 10)
    out["call"] = status(ok)
    if ok is not None and status(ok) == 200:
        to_tag = [v for v in header_values(ok, b"To")[0].split(";") if v.startswith("tag=")]
        tag = to_tag[0][4:]
        routes = header_values(ok, b"Record-Route")  # the caller's route set (§12.1.2)
        contact = header_values(ok, b"Contact")[0].strip("<>").split(";")[0]
        sock.sendto(request("ACK", contact, "5", to_tag=tag, routes=routes, call_id=call_id,
                            port=port), EDGE)
        attempt("signed_route_elsewhere", request(
            "BYE", "sip:x@127.0.0.1:5090", "6", to_tag=tag, routes=routes, call_id=call_id,
            cseq=2, port=port))
        attempt("dialog_bye", request("BYE", contact, "7", to_tag=tag, routes=routes,
                                      call_id=call_id, cseq=3, port=port))
    # Every attempt above was answered by the edge itself (a relay would have brought the
    # service's answer or a timeout instead), so what reached the service is here by now.
    leaked = 0
    while True:
        try:
            service.recv(65535)
            leaked += 1
        except BlockingIOError:
            break
    out["reached_loopback_service"] = leaked
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 5:
        dialog(sys.argv[4], sys.argv[5])  # ... start|bye STATE_FILE
    else:
        main()
