"""Process memory as OpenSIPS's ``pkmem:`` and ``shmem:`` statistics groups.

OpenSIPS gives every process a private memory pool (``pkmem``, one set of figures per
process, named ``pkmem:<process>-<figure>``) and all processes one shared pool
(``shmem``). A Python process has neither pool; the nearest honest figures are read from
the kernel and the C allocator (:func:`read_memory`) and mapped (:func:`pkmem_values`,
:func:`shmem_values`, pure) as follows:

==================  =========================================================  ==========
figure              pkmem (this process, ``pkmem:0-...``)                      shmem
==================  =========================================================  ==========
``total_size``      the memory the process may use: its cgroup's               the same
                    ``memory.max``, else the host's MemTotal
``real_used_size``  resident set size (RSS)                                    sum of RSS
``used_size``       private resident memory (RSS minus shared pages): what     sum of the
                    OpenSIPS would count in the private pool                   shared pages
``max_used_size``   peak RSS (``ru_maxrss``)                                   sum of peaks
``free_size``       ``total_size - real_used_size``                            host's
                                                                               MemAvailable
``fragments``       free chunks in the C heap (glibc ``mallinfo2().ordblks``)  sum
``heap_size``       bytes the C heap holds for Python (``mallinfo2`` arena +   sum
                    mmapped chunks); Python objects of more than 512 bytes
                    live there
``python_blocks``   blocks held by Python's small-object allocator             sum
                    (``sys.getallocatedblocks()``)
==================  =========================================================  ==========

A process answers ``pkmem:0-...`` (it knows no mesh-wide number); the gateway renames
``0`` to the process's ``ps`` ID, as it does for ``load-proc-N``. ``shmem:`` values are
summed over the processes by the gateway, except ``total_size`` and ``free_size``,
which describe the host and are taken once (the largest answer).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import resource
import sys

# shmem figures that describe the host, not a process: never summed across processes.
HOST_FIGURES = ("shmem:total_size", "shmem:free_size")


@dataclasses.dataclass(frozen=True)
class MemorySample:
    """One reading of a process's memory, in bytes (blocks and chunks: counts)."""

    rss: int = 0
    shared: int = 0
    peak_rss: int = 0
    limit: int = 0
    available: int = 0
    heap: int = 0
    fragments: int = 0
    python_blocks: int = 0


def pkmem_values(s: MemorySample, proc: int = 0) -> dict[str, int]:
    """The ``pkmem`` group of one process (names ``<proc>-<figure>``)."""
    figures = {
        "total_size": s.limit,
        "real_used_size": s.rss,
        "used_size": max(s.rss - s.shared, 0),
        "max_used_size": max(s.peak_rss, s.rss),
        "free_size": max(s.limit - s.rss, 0),
        "fragments": s.fragments,
        "heap_size": s.heap,
        "python_blocks": s.python_blocks,
    }
    return {f"{proc}-{k}": v for k, v in figures.items()}


def shmem_values(s: MemorySample) -> dict[str, int]:
    """This process's share of the ``shmem`` group (summed by the gateway)."""
    return {
        "total_size": s.limit,
        "real_used_size": s.rss,
        "used_size": s.shared,
        "max_used_size": max(s.peak_rss, s.rss),
        "free_size": s.available,
        "fragments": s.fragments,
        "heap_size": s.heap,
        "python_blocks": s.python_blocks,
    }


# -- reading (I/O) -------------------------------------------------------------------------
class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc_mallinfo() -> tuple[int, int]:
    """(heap bytes held, free chunks) from glibc's mallinfo2; (0, 0) elsewhere."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        fn = libc.mallinfo2
    except (OSError, AttributeError):
        return 0, 0
    fn.restype = _Mallinfo2
    info = fn()
    return int(info.arena + info.hblkhd), int(info.ordblks)


def _meminfo() -> dict[str, int]:
    out: dict[str, int] = {}
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                parts = rest.split()
                if parts and parts[0].isdigit():
                    out[key] = int(parts[0]) * 1024
    except OSError:
        pass
    return out


def _cgroup_limit() -> int:
    try:
        with open("/sys/fs/cgroup/memory.max") as fh:
            text = fh.read().strip()
    except OSError:
        return 0
    return int(text) if text.isdigit() else 0


def read_memory() -> MemorySample:
    """This process's memory now (Linux /proc; zeros where a figure cannot be read)."""
    page = resource.getpagesize()
    rss = shared = 0
    try:
        with open(f"/proc/{os.getpid()}/statm") as fh:
            fields = fh.read().split()
        rss, shared = int(fields[1]) * page, int(fields[2]) * page
    except (OSError, ValueError, IndexError):
        pass
    info = _meminfo()
    total = info.get("MemTotal", 0)
    limit = _cgroup_limit()
    heap, fragments = _libc_mallinfo()
    return MemorySample(
        rss=rss, shared=shared,
        peak_rss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        limit=min(limit, total) if limit and total else (limit or total),
        available=info.get("MemAvailable", 0),
        heap=heap, fragments=fragments, python_blocks=sys.getallocatedblocks())
