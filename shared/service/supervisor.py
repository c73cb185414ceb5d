"""``sipmesh up``: the supervisor of a single-host mesh.

It hosts the embedded registry (HTTP on loopback) in its own process, starts every service
of :mod:`.catalog` as a child (``python -m <module>``) told where the registry is through
``SIPMESH_DISCOVERY_URL``, prints the endpoints as instances register, restarts a child that
exits with exponential backoff (reset once a child stayed up ``stable_after`` seconds), and
on SIGINT/SIGTERM stops every child with SIGTERM (SIGKILL after ``stop_timeout``), then the
registry.

The supervisor registers itself as service ``supervisor`` with the list of services it
expects in ``meta.expected``, so ``sipmesh status`` can report a service that is down.
Children run in their own session (a terminal's Ctrl-C reaches only the supervisor, which
stops them in order) and die with it if it is killed (Linux ``PR_SET_PDEATHSIG``).

Output lines on stdout are stable for scripts and tests::

    registry http://127.0.0.1:8710
    started gateway pid 1234
    endpoint gateway mi http://127.0.0.1:8888/mi
    exited gateway pid 1234 rc -9; restart in 0.5s
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import os
import signal
import sys
import time
from collections.abc import Callable, Mapping, Sequence

import structlog

from shared.discovery.embedded import RegistryServer
from shared.discovery.port import Instance
from shared.service.catalog import ChildSpec

# Registration metadata keys printed as endpoints, with their label.
ENDPOINT_KEYS = (("public_mi_url", "mi"), ("grpc", "grpc"), ("sip", "sip"), ("sip_udp", "sip"),
                 ("sip_tcp", "sip"), ("metrics_url", "metrics"))


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """The ``[mesh]`` section: the supervisor's registry and restart policy."""

    registry_host: str = "127.0.0.1"
    registry_port: int = 8710
    services: tuple[str, ...] = ()
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    stable_after: float = 30.0
    stop_timeout: float = 10.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


class _Child:
    def __init__(self, spec: ChildSpec) -> None:
        self.spec = spec
        self.proc: asyncio.subprocess.Process | None = None
        self.backoff = 0.0
        self.restarts = 0
        self.started = 0.0


class Supervisor:
    """Runs the registry and the children until ``stop`` is set."""

    def __init__(
        self, specs: Sequence[ChildSpec], cfg: MeshConfig, *,
        env: Mapping[str, str] | None = None, out: Callable[[str], None] | None = None,
    ) -> None:
        self.specs = list(specs)
        self.cfg = cfg
        self.base_env = dict(os.environ if env is None else env)
        self.out = out or (lambda line: print(line, flush=True))
        self.log = structlog.get_logger("supervisor")
        self.server = RegistryServer()
        self.children = {s.name: _Child(s) for s in self.specs}
        self.registry_url = ""
        self._stopping = asyncio.Event()
        self._printed: set[tuple[str, str]] = set()

    async def run(self, stop: asyncio.Event) -> None:
        self.registry_url = await self.server.start(self.cfg.registry_host, self.cfg.registry_port)
        self.out(f"registry {self.registry_url}")
        me = Instance("supervisor", f"supervisor-{os.getpid()}", self.cfg.registry_host,
                      self.server.port, meta={
                          "pid": str(os.getpid()),
                          "expected": ",".join(s.name for s in self.specs)})
        await self.server.registry.register(me, ttl=3600 * 24 * 365)
        tasks = [asyncio.create_task(self._keep(child)) for child in self.children.values()]
        tasks.append(asyncio.create_task(self._announce()))
        await stop.wait()
        self._stopping.set()
        self.out("stopping")
        await asyncio.gather(*(self._terminate(c) for c in self.children.values()))
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t
        await self.server.registry.deregister(me.id)
        await self.server.stop()
        self.out("stopped")

    def _env(self) -> dict[str, str]:
        env = dict(self.base_env)
        env["SIPMESH_DISCOVERY_BACKEND"] = "embedded"
        env["SIPMESH_DISCOVERY_URL"] = self.registry_url
        env.setdefault("PYTHONUNBUFFERED", "1")
        return env

    async def _spawn(self, child: _Child) -> None:
        child.proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", child.spec.module, env=self._env(),
            start_new_session=True, preexec_fn=_die_with_parent,
        )
        child.started = time.monotonic()
        self.out(f"started {child.spec.name} pid {child.proc.pid}")

    async def _keep(self, child: _Child) -> None:
        """Starts the child and restarts it with backoff whenever it exits."""
        while not self._stopping.is_set():
            await self._spawn(child)
            assert child.proc is not None
            rc = await child.proc.wait()
            await self._forget(child.proc.pid)
            if self._stopping.is_set():
                return
            ran = time.monotonic() - child.started
            if ran >= self.cfg.stable_after or child.backoff == 0.0:
                child.backoff = self.cfg.backoff_initial
            else:
                child.backoff = min(child.backoff * 2, self.cfg.backoff_max)
            child.restarts += 1
            self.out(f"exited {child.spec.name} pid {child.proc.pid} rc {rc}; "
                     f"restart in {child.backoff:g}s")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), child.backoff)

    async def _forget(self, pid: int) -> None:
        """Drops the registrations of a dead child (it could not deregister itself)."""
        for inst in await self.server.registry.instances():
            if inst.meta.get("pid") == str(pid) and inst.service != "supervisor":
                await self.server.registry.deregister(inst.id)

    async def _terminate(self, child: _Child) -> None:
        proc = child.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), self.cfg.stop_timeout)
        except TimeoutError:
            self.log.warning("child_killed", child=child.spec.name, pid=proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        self.out(f"exited {child.spec.name} pid {proc.pid} rc {proc.returncode}")

    async def _announce(self) -> None:
        """Prints each endpoint once, as instances register."""
        index = 0
        registry = self.server.registry
        while True:
            index, _ = await registry.wait_instances("*", index, 30.0)
            for inst in await registry.instances():
                if not inst.passing:
                    continue
                for key, label in ENDPOINT_KEYS:
                    value = inst.meta.get(key)
                    if value and (inst.id, key) not in self._printed:
                        self._printed.add((inst.id, key))
                        self.out(f"endpoint {inst.service} {label} {value}")
