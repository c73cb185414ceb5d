"""The shared test helpers keep their promises: ports reserved race-free, polling that
names what it waited for."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

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
