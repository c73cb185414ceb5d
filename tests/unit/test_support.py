"""The shared test helpers keep their promises: ports reserved race-free, polling that
names what it waited for, opensips-cli run without its start-up as it runs on its own."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest

from tests.support import opensips_cli
from tests.support.ports import candidates, ephemeral_range, reserve_port, reserved_elsewhere
from tests.support.waiting import eventually, eventually_sync

ROOT = Path(__file__).resolve().parents[2]


def test_reserved_ports_are_outside_the_kernels_range_and_never_given_twice() -> None:
    low, high = ephemeral_range()
    got = [reserve_port() for _ in range(20)]
    assert len(set(got)) == 20
    assert all(p in candidates() and not low <= p <= high for p in got)
    first = reserve_port(count=3)
    assert not {first, first + 1, first + 2} & set(got)
    for port in (first, first + 1, first + 2):  # usable right away, UDP and TCP
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u, \
                socket.socket(socket.AF_INET, socket.SOCK_STREAM) as t:
            u.bind(("127.0.0.1", port))
            t.bind(("127.0.0.1", port))


def test_another_process_never_gets_a_reserved_port() -> None:
    mine = {reserve_port() for _ in range(5)}
    # A second process (another test run on this machine) sees them locked...
    probe = ("from tests.support.ports import reserved_elsewhere as r, reserve_port as p;"
             f"import sys; mine={sorted(mine)!r};"
             "print(all(r(x) for x in mine), any(p() in mine for _ in range(200)))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True, timeout=60, cwd=ROOT).stdout.split()
    assert out == ["True", "False"]
    assert not any(reserved_elsewhere(x) for x in mine)  # ...and this one owns them


def test_a_port_in_use_is_skipped() -> None:
    port = reserve_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", port + 1))  # someone else's service, no reservation
        busy.listen()
        assert all(reserve_port() != port + 1 for _ in range(50))


async def test_eventually_returns_the_value_and_names_what_failed() -> None:
    box: list[int] = []
    asyncio.get_running_loop().call_later(0.05, box.append, 7)
    assert await eventually(lambda: box and box[0], 2, "the value") == 7

    async def never() -> bool:
        return False

    with pytest.raises(AssertionError, match=r"after 0.1s waiting for nothing; last: False"):
        await eventually(never, 0.1, "nothing")


def test_eventually_sync_ignores_listed_errors_only() -> None:
    calls: Iterator[object] = iter([ConnectionRefusedError(), ConnectionRefusedError(), "up"])

    def check() -> str:
        item = next(calls)
        if isinstance(item, Exception):
            raise item
        return str(item)

    assert eventually_sync(check, 2, "start", interval=0.001, ignore=(OSError,)) == "up"
    with pytest.raises(KeyError):
        empty: dict[str, int] = {}
        eventually_sync(lambda: empty["x"], 1, "a key")
    with pytest.raises(AssertionError, match="last: ConnectionRefusedError"):
        eventually_sync(lambda: (_ for _ in ()).throw(ConnectionRefusedError()), 0.05,
                        "a refusal", ignore=(OSError,))


class _FakeMi(BaseHTTPRequestHandler):
    """An MI over HTTP that knows `uptime` (and `which`, which opensips-cli asks first)."""

    seen: list[tuple[str, object]] = []

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((request["method"], request.get("params")))
        answer: dict[str, object] = {"jsonrpc": "2.0", "id": request["id"]}
        if request["method"] == "which":
            answer["result"] = ["uptime", "which"]
        elif request["method"] == "uptime" and not request.get("params"):
            answer["result"] = {"Up time": "3 [sec]"}
        else:
            answer["error"] = {"code": -32602, "message": "Invalid params"}
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def test_opensips_cli_answers_as_a_process_of_its_own_does() -> None:
    server = HTTPServer(("127.0.0.1", 0), _FakeMi)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_port}/mi"
    try:
        for cmd in (("uptime",), ("uptime", "x=1"), ("no_such_cmd",)):
            _FakeMi.seen.clear()
            alone = subprocess.run(
                [str(opensips_cli.SCRIPT), "-o", "communication_type=http", "-o",
                 f"url={url}", "-x", "mi", *cmd], capture_output=True, text=True, timeout=60)
            asked = list(_FakeMi.seen)
            _FakeMi.seen.clear()
            served = opensips_cli.mi(url, *cmd)
            assert (served.returncode, served.stdout, served.stderr) == (
                alone.returncode, alone.stdout, alone.stderr), cmd
            assert _FakeMi.seen == asked  # the same MI requests on the wire
        ok = opensips_cli.mi(url, "uptime")
        assert ok.returncode == 0 and json.loads(ok.stdout) == {"Up time": "3 [sec]"}
        assert alone.returncode != 0 and "no_such_cmd" in alone.stderr
    finally:
        server.shutdown()
        server.server_close()
