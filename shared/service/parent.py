"""A child process that dies with its parent (the edge's workers, ``sipmesh up``'s services).

A process whose parent is killed with SIGKILL is not told: it is re-parented (to init or a
subreaper) and runs on, holding its ports. :func:`die_with_parent` arms the child:

* Linux: ``prctl(PR_SET_PDEATHSIG, signum)`` through ctypes: the kernel sends ``signum``
  (SIGTERM: the process drains as on any stop) once the parent exits. The setting survives
  ``exec``, so it may be made before (``preexec_fn``) or after it. The kernel watches the
  parent *thread* that forked the child: spawn from the main thread.
* Race: a parent that died before the setting took effect is never signalled for. So the
  child compares ``os.getppid()`` with the parent it expects (its pid passed down) after
  arming, and signals itself at once if they differ.
* Elsewhere (no ``prctl``): a daemon thread polls ``os.getppid()`` every ``poll_interval``
  s and signals the process once it changes.
* ``sipmesh up``'s children and the edge's workers arm themselves after exec
  (:func:`die_with_parent_from_env`, the parent's pid in ``SIPMESH_PARENT_PID``), not in
  a ``preexec_fn``: with a
  ``preexec_fn`` CPython runs the interpreter's at-fork handlers in the forked child, gRPC's
  among them, which in a process with gRPC threads could end the child before its exec (a
  supervisor test saw a child that should have exited 3 end otherwise, after a gRPC
  ``epoll_wait`` error logged by that child).
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from typing import Any

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
PARENT_PID_ENV = "SIPMESH_PARENT_PID"


def _load_prctl() -> Any:
    """libc's ``prctl``, or None. Looked up once, at import, in the process's own symbols
    (libc's among them, glibc or musl): a forked child (``preexec_fn``) then only calls
    it, with no library loading between fork and exec."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Asks Linux to send ``signum`` to this process when its parent exits; False where
    ``prctl`` is not available (another system) or refused."""
    if _PRCTL is None:
        return False
    return int(_PRCTL(PR_SET_PDEATHSIG, int(signum), 0, 0, 0)) == 0


def die_with_parent(parent: int, *, signum: int = signal.SIGTERM, poll_interval: float = 1.0,
                    use_prctl: bool = True) -> str:
    """Makes this process get ``signum`` when its parent, pid ``parent``, is gone; returns
    how (``"prctl"`` or ``"poll"``). If the parent is already gone, the signal is sent at
    once (its default action, before the service installs handlers, ends the process)."""
    how = "prctl" if use_prctl and set_parent_death_signal(signum) else "poll"
    if os.getppid() != parent:  # it died before (or while) we armed: nobody will tell us
        os.kill(os.getpid(), signum)
        return how
    if how == "poll":
        threading.Thread(target=_watch, args=(parent, signum, poll_interval),
                         name="parent-watch", daemon=True).start()
    return how


def die_with_parent_from_env(environ: dict[str, str] | None = None) -> str | None:
    """A child of ``sipmesh up``: :func:`die_with_parent` for the pid in
    ``SIPMESH_PARENT_PID``, taken out of the environment first, so this process's own
    children (the edge's workers) do not inherit it. None when it is not set."""
    env = os.environ if environ is None else environ
    value = env.pop(PARENT_PID_ENV, "")
    if not value.isdigit():
        return None
    return die_with_parent(int(value))


def _watch(parent: int, signum: int, interval: float) -> None:
    stop = threading.Event()
    while not stop.wait(interval):
        if os.getppid() != parent:
            os.kill(os.getpid(), signum)
            return
