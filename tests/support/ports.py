"""Ports for real peers (sipp, baresip, linphonec, a second edge...), reserved race-free.

A peer that is given a port number binds it itself, later. The old ``free_port()`` bound
port 0, closed the socket and returned the number; until the peer bound it, the kernel
could hand the very port to any other socket bound to port 0 or connecting out (another
test, another developer's run on the same machine), and the peer died with "Address
already in use" (``test_baresip_registers...`` did).

:func:`reserve_port` closes both gaps:

* ports come from a range **below the kernel's ephemeral range**
  (``/proc/sys/net/ipv4/ip_local_port_range``, 32768-60999 here), so the kernel never
  hands them out by itself, whatever else runs;
* each reserved port is **locked** for as long as this process lives: an exclusive
  ``flock`` on ``$TMPDIR/sipmesh-test-ports/<port>``, so concurrent test runs on the
  machine (which all use this module) never pick the same port, and a run never gives a
  port twice;
* a candidate must also bind now on 127.0.0.1 over UDP and TCP, which skips ports that a
  running service (RabbitMQ's 25672, a developer's edge...) holds.

A crashed run leaves no stale reservation: the kernel drops its locks with the process.
"""

from __future__ import annotations

import contextlib
import fcntl
import random
import socket
import tempfile
from pathlib import Path
from typing import IO

LOCK_DIR = Path(tempfile.gettempdir()) / "sipmesh-test-ports"
_FLOOR = 20000  # below: well-known services' ports (5060, 5432, 5672, 6379, 8710, 8888...)
_held: dict[int, IO[str]] = {}  # port -> its lock file, open (so locked) until exit


def ephemeral_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int]:
    try:
        low, high = (int(x) for x in Path(path).read_text().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999  # the Linux default


def candidates() -> range:
    """The ports this module hands out: from 20000 up to the ephemeral range."""
    low, _ = ephemeral_range()
    top = min(low, 32768)
    if top - _FLOOR < 1000:
        raise RuntimeError(f"ephemeral ports start at {low}: no room below for test ports")
    return range(_FLOOR, top)


def _bindable(port: int) -> bool:
    for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
        with socket.socket(socket.AF_INET, kind) as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _lock(port: int) -> IO[str] | None:
    LOCK_DIR.mkdir(mode=0o777, parents=True, exist_ok=True)
    handle = open(LOCK_DIR / str(port), "w")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        return None
    return handle


def reserve_port(count: int = 1) -> int:
    """The first of ``count`` consecutive ports, free on 127.0.0.1 for UDP and TCP and
    reserved for this process (see the module docstring); never the same port twice."""
    pool = candidates()
    start = random.randrange(len(pool))
    for offset in range(len(pool)):
        first = pool[(start + offset) % len(pool)]
        ports = range(first, first + count)
        if ports[-1] >= pool.stop or any(p in _held for p in ports):
            continue
        locks: list[IO[str]] = []
        for port in ports:
            handle = _lock(port)
            if handle is None or not _bindable(port):
                if handle is not None:
                    handle.close()
                break
            locks.append(handle)
        if len(locks) == count:
            _held.update(zip(ports, locks, strict=True))
            return first
        for handle in locks:
            handle.close()
    raise RuntimeError("no free test port left: every candidate is reserved or in use")


def release_port(port: int) -> None:
    """Gives a port back before the end of the process (rarely needed)."""
    handle = _held.pop(port, None)
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()


def reserved_elsewhere(port: int) -> bool:
    """True when another process holds ``port``'s reservation (for the tests of this)."""
    if port in _held:
        return False
    handle = _lock(port)
    if handle is None:
        return True
    handle.close()
    return False


__all__ = ["LOCK_DIR", "candidates", "ephemeral_range", "release_port", "reserve_port",
           "reserved_elsewhere"]
