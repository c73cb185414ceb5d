"""Nonce-count replay tracking (RFC 7616 §3.4) that every edge worker can share.

A nonce names a *slot* of a fixed table and carries a *generation*: the issuing worker's
sequence number (see `services.edge.auth` for the nonce format; the nonce is HMAC-signed,
so slot and generation cannot be forged).  A slot holds two unsigned 64-bit numbers: the
generation of the nonce that owns it and the highest nonce-count accepted with that nonce.
`advance(slot, generation, nc)` is the whole check (`claim` is the same, returning what the
slot held so that `release` can undo a claim made with credentials found wrong later, by
the registrar: see services/edge/auth.py):

- slot owned by an older generation (or empty): the nonce claims the slot, nc is kept: ok;
- slot owned by this generation: ok only when nc is higher than the one kept (else replay);
- slot owned by a newer generation: the nonce was displaced: stale (RFC 7616 §3.3: the
  client gets a fresh challenge with `stale=true`, not a failure).

A slot's generation only ever grows, so once a nonce is displaced it can never come back,
and while it owns its slot its accepted counts strictly grow: a captured request replayed
with the same nc is refused whichever worker it reaches.  The table size bounds the memory
(like OpenSIPS's nonce index array in shared memory): slot reuse costs at most one extra
challenge round-trip for a client that keeps a nonce for long.  Each issuer (worker `k`
of `W`) hands out the slots k, k+W, k+2W, ... round robin, so nonces of different workers
never share a slot and a slot is reused only after `slots / W` nonces of that worker.
Issuing writes nothing but the issuer's own counter; slots are claimed at first use.

`epoch` is the second the table was created: a nonce issued before it (by an earlier run
with the same secret) cannot have been tracked, so it is answered stale.

Two backends:

- `LocalNonceCounts`: the table in a bytearray of this process (one-worker edges, tests).
- `SharedNonceCounts`: the table in a file mapped by every worker (created by the
  supervisor with `create_segment`, in /dev/shm when there is one, passed to the workers
  by path).  Concurrency: the read-compare-write of `advance` must be atomic across
  processes, or one nc sent at the same moment to two workers would be accepted by both;
  Python has no atomic compare-and-swap on shared memory, so `advance` holds a POSIX
  byte-range lock (`fcntl.lockf`) on the slot's 16 bytes: two system calls, about 2 us,
  contended only by requests for the same nonce, and released by the kernel when a holder
  dies (a worker killed with -9 never leaves the table locked, unlike a semaphore).
  POSIX locks belong to a process, not a thread: a worker uses its table from its event
  loop only.
  The issuer counters need no lock: worker k alone writes counter k.  They live in the
  segment, so a worker restarted on the same segment goes on with higher generations.
"""

from __future__ import annotations

import fcntl
import mmap
import os
import struct
import tempfile
from typing import Literal, Protocol

Verdict = Literal["ok", "replay", "stale", "bad"]

MAGIC = b"SMNONCE\x01"
_HEADER = struct.Struct("<8sQQQ")  # magic, slots, epoch, issuers
_COUNTER = struct.Struct("<Q")
_SLOT = struct.Struct("<QQ")  # generation owning the slot, highest nonce-count
_HEADER_SIZE = 64
MAX_COUNT = (1 << 64) - 1
DEFAULT_LOCAL_SLOTS = 1 << 18  # 4 MiB
DEFAULT_SHARED_SLOTS = 1 << 20  # 16 MiB of shared memory, touched as slots get used


class NonceCountsError(ValueError):
    """A nonce table cannot be created or opened (clear message for the operator)."""


class NonceCounts(Protocol):
    """The nonce-count table seen by one ProxyAuthenticator."""

    @property
    def epoch(self) -> int:
        """Unix second the table was created; older nonces are stale."""
        ...

    def issue(self) -> tuple[int, int]:
        """(slot, generation) for a new nonce."""
        ...

    def advance(self, slot: int, generation: int, count: int) -> Verdict:
        """Accept `count` for the nonce (slot, generation) if it is fresh, remembering it."""
        ...

    def claim(self, slot: int, generation: int, count: int) -> tuple[Verdict, int, int]:
        """`advance`, also returning the slot as it was before (owner, highest count), for
        `release` when the claim turns out to be made with wrong credentials."""
        ...

    def release(self, slot: int, generation: int, count: int, owner: int,
                highest: int) -> None:
        """Undo a claim of `count`: the slot back to (owner, highest), if nothing else
        changed it since."""
        ...

    def close(self) -> None: ...


def _layout(slots: int, issuers: int) -> tuple[int, int]:
    """(offset of slot 0, total size) of a table."""
    first = _HEADER_SIZE + _COUNTER.size * issuers
    first = (first + 15) // 16 * 16
    return first, first + _SLOT.size * slots


class _SlotTable:
    """The table logic over a writable buffer; subclasses say where it lives and lock."""

    def __init__(self, buf: bytearray | mmap.mmap, issuer: int) -> None:
        magic, slots, epoch, issuers = _HEADER.unpack_from(buf, 0)
        if magic != MAGIC:
            raise NonceCountsError("not a SipMesh nonce table (bad magic)")
        first, size = _layout(slots, issuers)
        if slots < 1 or issuers < 1 or slots < issuers or len(buf) < size:
            raise NonceCountsError(
                f"nonce table is damaged: {slots} slots, {issuers} issuers, {len(buf)} bytes")
        if not 0 <= issuer < issuers:
            raise NonceCountsError(f"issuer {issuer} is not in 0..{issuers - 1}")
        self._buf = buf
        self.slots = slots
        self.issuers = issuers
        self.issuer = issuer
        self._epoch = int(epoch)
        self._first = first
        self._counter_at = _HEADER_SIZE + _COUNTER.size * issuer
        self._per_issuer = slots // issuers

    @property
    def epoch(self) -> int:
        return self._epoch

    def issue(self) -> tuple[int, int]:
        # Only this issuer writes its counter: no lock (see the module docstring).
        at = self._counter_at
        seq = _COUNTER.unpack_from(self._buf, at)[0] + 1
        _COUNTER.pack_into(self._buf, at, seq)
        return self.issuer + self.issuers * (seq % self._per_issuer), seq

    def advance(self, slot: int, generation: int, count: int) -> Verdict:
        return self.claim(slot, generation, count)[0]

    def claim(self, slot: int, generation: int, count: int) -> tuple[Verdict, int, int]:
        if not (0 <= slot < self.slots and 0 < generation <= MAX_COUNT
                and 0 <= count <= MAX_COUNT):
            return "bad", 0, 0
        at = self._first + _SLOT.size * slot
        self._lock(at)
        try:
            owner, highest = _SLOT.unpack_from(self._buf, at)
            if owner > generation:
                return "stale", owner, highest
            if owner == generation and count <= highest:
                return "replay", owner, highest
            _SLOT.pack_into(self._buf, at, generation, count)
            return "ok", owner, highest
        finally:
            self._unlock(at)

    def release(self, slot: int, generation: int, count: int, owner: int,
                highest: int) -> None:
        # Compare and restore under the slot's lock: a later claim (a higher count, a newer
        # nonce) has won since and stays.
        if not 0 <= slot < self.slots:
            return
        at = self._first + _SLOT.size * slot
        self._lock(at)
        try:
            if _SLOT.unpack_from(self._buf, at) == (generation, count):
                _SLOT.pack_into(self._buf, at, owner, highest)
        finally:
            self._unlock(at)

    def _lock(self, at: int) -> None:
        pass

    def _unlock(self, at: int) -> None:
        pass

    def close(self) -> None:
        pass


def _header(slots: int, issuers: int, epoch: int) -> bytes:
    if slots < 1 or issuers < 1 or slots < issuers:
        raise NonceCountsError(f"a nonce table needs slots >= issuers >= 1 "
                               f"(got {slots} slots, {issuers} issuers)")
    return _HEADER.pack(MAGIC, slots, epoch, issuers)


class LocalNonceCounts(_SlotTable):
    """The table in this process only: a replay sent to another process is not seen."""

    def __init__(self, epoch: int, slots: int = DEFAULT_LOCAL_SLOTS) -> None:
        buf = bytearray(_layout(slots, 1)[1])
        buf[:_HEADER.size] = _header(slots, 1, epoch)
        super().__init__(buf, 0)


def create_segment(epoch: int, issuers: int, slots: int = DEFAULT_SHARED_SLOTS,
                   directory: str | None = None) -> str:
    """Create an empty shared table file (mode 0600) and return its path.

    The creator (the edge supervisor) unlinks it once every worker has opened it, so
    nothing is left behind whatever way the edge ends."""
    header = _header(slots, issuers, epoch)
    if directory is None:
        shm = "/dev/shm"
        directory = shm if os.access(shm, os.W_OK) else tempfile.gettempdir()
    try:
        fd, path = tempfile.mkstemp(prefix="sipmesh-edge-nonces-", dir=directory)
    except OSError as exc:
        raise NonceCountsError(f"cannot create the nonce table in {directory}: {exc}") from exc
    try:
        os.ftruncate(fd, _layout(slots, issuers)[1])  # sparse: zero pages until used
        os.pwrite(fd, header, 0)
    except OSError as exc:
        os.close(fd)
        os.unlink(path)
        raise NonceCountsError(f"cannot create the nonce table in {directory}: {exc}") from exc
    os.close(fd)
    return path


class SharedNonceCounts(_SlotTable):
    """The table in a file mapped by every worker of an edge (see the module docstring)."""

    def __init__(self, path: str, issuer: int) -> None:
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise NonceCountsError(f"cannot open the nonce table {path}: {exc}") from exc
        try:
            size = os.fstat(fd).st_size
            if size < _HEADER_SIZE:
                raise NonceCountsError(f"{path} is not a nonce table ({size} bytes)")
            buf = mmap.mmap(fd, size)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        self._map = buf
        try:
            super().__init__(buf, issuer)
        except BaseException:
            self.close()
            raise

    def _lock(self, at: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_EX, _SLOT.size, at)

    def _unlock(self, at: int) -> None:
        fcntl.lockf(self._fd, fcntl.LOCK_UN, _SLOT.size, at)

    def close(self) -> None:
        if self._fd >= 0:
            self._map.close()
            os.close(self._fd)
            self._fd = -1
