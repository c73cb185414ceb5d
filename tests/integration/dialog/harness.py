"""A real mesh for the dialog tests: `sipmesh up` with the gateway, an edge and the dialog
service (or N dialog nodes), sipp as phones, CDRs in the real PostgreSQL.

Nothing sleeps to synchronise: each helper polls the observable condition (an MI answer,
a row count, a process exit) with a deadline.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

import asyncpg  # noqa: F401  (the tests need it; fail early when missing)

from tests.integration.edge.edge_harness import free_port, is_bound, stop_process
from tests.integration.spine.meshproc import MeshProcess
from tests.support.waiting import eventually_sync

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
EDGE_SCENARIOS = HERE.parent / "edge" / "scenarios"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"
CONTRACTS = HERE.parents[2] / "contracts" / "mi"


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.05) -> Any:
    """tests/support/waiting.py's poll, under the name these tests use."""
    return eventually_sync(predicate, timeout, what, interval=interval)


def rpc(url: str, method: str, params: Any = None, timeout: float = 10) -> dict[str, Any]:
    """One JSON-RPC call over HTTP (what opensips-cli's mi_http does); the whole answer."""
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        answer: dict[str, Any] = json.loads(resp.read())
    return answer


def psql(sql: str) -> list[list[str]]:
    out = subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-At",
                          "-F", "\t", "-c", sql], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    return [line.split("\t") for line in out.stdout.splitlines() if line]


class DialogMesh:
    """`sipmesh up` with gateway, edge and dialog on free ports (see the module docstring)."""

    def __init__(self, tmp: Path, *, nodes: int = 0, routing: str = "dialog_routing",
                 services: str = "gateway,edge,dialog", **env: str) -> None:
        self.tmp = tmp
        self.table = f"acc_t{uuid.uuid4().hex[:10]}"
        self.dialog_table = f"dialog_t{uuid.uuid4().hex[:10]}"
        self.sip_port = free_port()
        settings = {
            "SIPMESH_MESH_SERVICES": services,
            "SIPMESH_EDGE_LISTEN": f"udp:127.0.0.1:{self.sip_port}",
            "SIPMESH_EDGE_UVLOOP": "false",
            "SIPMESH_EDGE_ROUTING_MODULE": routing,
            "SIPMESH_DIALOG_UVLOOP": "false",
            "SIPMESH_DIALOG_CDR_URL": PG_DSN,
            "SIPMESH_DIALOG_CDR_TABLE": self.table,
            # Declared as OpenSIPS declares profiles: MI knows them before any call.
            "SIPMESH_DIALOG_PROFILES_WITH_VALUE": "caller",
            "SIPMESH_DIALOG_PROFILES_NO_VALUE": "calls",
            "XDG_STATE_HOME": str(tmp / "state"),
            "PYTHONPATH": os.pathsep.join([str(HERE.parents[2]), str(HERE)]),
        }
        if nodes:
            settings.update({
                "SIPMESH_MESH_NODES": str(nodes),
                "SIPMESH_DIALOG_CLUSTER_PING_INTERVAL": "0.2",
                "SIPMESH_DIALOG_CLUSTER_PING_TIMEOUT": "0.3",
                "SIPMESH_DIALOG_CLUSTER_PING_RETRIES": "2",
                "SIPMESH_DIALOG_CLUSTER_SEED_FALLBACK_INTERVAL": "1",
            })
        settings.update(env)
        self.mesh = MeshProcess(tmp, **settings)
        try:
            self.mesh.line(r"^endpoint edge sip ", 30)
            self.seen_lines(r"^endpoint dialog grpc ", max(nodes, 1), 30)
            # The edge tracks dialogs once it found a dialog service in discovery.
            wait_for(lambda: self.edge_stat("dialog:events_emitted") is not None, 20,
                     "the edge's dialog statistics")
        except BaseException:
            self.stop()
            raise
        self.sipp: list[subprocess.Popen[bytes]] = []

    def seen_lines(self, pattern: str, count: int, timeout: float) -> list[str]:
        """Waits until `count` stdout lines of `sipmesh up` matched `pattern` (all time)."""
        import re

        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.mesh.seen if re.search(pattern, ln)]
            if len(found) >= count:
                return found
            self.mesh.expect(pattern, max(0.1, deadline - time.monotonic()))

    @property
    def gateway(self) -> str:
        return self.mesh.gateway_url

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def mi(self, method: str, params: Any = None) -> Any:
        answer = rpc(self.gateway, method, params)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def checked(self, method: str, params: Any = None) -> Any:
        """`mi`, with the params and the real answer validated against contracts/mi."""
        import jsonschema

        schema = json.loads((CONTRACTS / f"{method}.json").read_text())
        jsonschema.validate(params, schema["params"])
        result = self.mi(method, params)
        jsonschema.validate(result, schema["result"])
        return result

    def edge_stat(self, name: str) -> int | None:
        stats = self.mi("get_statistics", [[name]])
        value = stats.get(name)
        assert value is None or isinstance(value, int), value
        return value

    def dialogs(self, **params: Any) -> list[dict[str, Any]]:
        result = self.mi("dlg_list", params or None)
        return list(result["Dialogs"])

    def cdrs(self, where: str = "true") -> list[dict[str, Any]]:
        rows = psql(f"SELECT row_to_json(a) FROM {self.table} a WHERE {where} ORDER BY id")
        return [json.loads(r[0]) for r in rows]

    def wait_cdrs(self, count: int, timeout: float) -> list[dict[str, Any]]:
        """The CDR rows once there are at least `count` of them."""
        def enough() -> list[dict[str, Any]] | None:
            rows = self.cdrs()
            return rows if len(rows) >= count else None

        return wait_for(enough, timeout, f"{count} CDRs")  # type: ignore[no-any-return]

    def restart(self, service: str, *, drain_timeout: int, timeout: float
                ) -> tuple[float, list[str]]:
        """`sipmesh restart <service>` (one instance at a time): how long it took and the
        step lines it printed; fails unless it succeeded."""
        started = time.monotonic()
        done = self.mesh.cli("restart", service, "--timeout", str(drain_timeout),
                             timeout=timeout)
        took = time.monotonic() - started
        assert done.returncode == 0, done.stdout + done.stderr
        return took, done.stdout.strip().splitlines()

    def call_load(self, uas_port: int, *, rate: int, most: int, timeout: int,
                  scenario: str = "uac") -> CallLoad:
        return CallLoad(self, uas_port, rate=rate, most=most, timeout=timeout,
                        scenario=scenario)

    # -- sipp --------------------------------------------------------------------------------
    def uas(self, scenario: str = "uas", *, hold_ms: int = 0,
            extra: Sequence[str] = ()) -> int:
        port = free_port()
        cmd = ["sipp", *_scenario(scenario), "-i", "127.0.0.1", "-p", str(port), "-nostdin",
               "-bind_local", "-d", str(hold_ms), *extra]
        proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        self.sipp.append(proc)
        wait_for(lambda: is_bound(port, "udp") or proc.poll() is not None, 10, "sipp UAS")
        assert proc.poll() is None, f"sipp UAS exited early: {cmd}"
        return port

    def uac(self, scenario: str, uas_port: int, service: str, *, calls: int = 1,
            rate: int = 10, hold_ms: int = 0, timeout: int = 60,
            background: bool = False) -> subprocess.Popen[bytes]:
        port = free_port()
        cmd = ["sipp", *_scenario(scenario), "-i", "127.0.0.1", "-p", str(port),
               "-rsa", self.edge, f"127.0.0.1:{uas_port}", "-s", service, "-m", str(calls),
               "-r", str(rate), "-l", str(max(calls, 1)), "-d", str(hold_ms), "-nostdin",
               "-timeout", f"{timeout}s", "-timeout_error", "-buff_size", "1048576",
               "-trace_err", "-error_file", str(self.tmp / f"uac_{port}_err.log")]
        proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        self.sipp.append(proc)
        if not background:
            proc.wait(timeout + 30)
        return proc

    def stop(self) -> None:
        for proc in getattr(self, "sipp", []):
            stop_process(proc)
        self.mesh.stop()
        psql(f"DROP TABLE IF EXISTS {self.table}")


class LoadTarget(Protocol):
    """Where a CallLoad runs: its work directory and the edge's host:port."""

    @property
    def tmp(self) -> Path: ...

    @property
    def edge(self) -> str: ...


class CallLoad:
    """sipp calling the UAS through the edge at `rate` calls/s, each held 1 s, the steady
    load a rolling-restart test restarts a service under; `finish()` lets the calls
    running complete and fails on any failed call. Its statistics go to a file (a pipe
    would fill and stall sipp on a long run). `service` is the Request-URI's user."""

    def __init__(self, mesh: LoadTarget, uas_port: int, *, rate: int, most: int,
                 timeout: int, scenario: str, service: str = "1002") -> None:
        self.rate = rate
        self.out = mesh.tmp / "uac.out"
        self.errors = mesh.tmp / "uac_err.log"
        with self.out.open("wb") as sink:
            self.proc = subprocess.Popen(
                ["sipp", *_scenario(scenario), "-i", "127.0.0.1", "-p", str(free_port()),
                 "-rsa", mesh.edge, f"127.0.0.1:{uas_port}", "-s", service, "-m", str(most),
                 "-r", str(rate), "-d", "1000", "-nostdin", "-timeout", f"{timeout}s",
                 "-timeout_error", "-buff_size", "1048576", "-trace_err",
                 "-error_file", str(self.errors)],
                cwd=mesh.tmp, stdout=sink, stderr=subprocess.STDOUT)

    def finish(self, timeout: float) -> int:
        """Stops new calls (SIGUSR1), waits for those running; the successful calls."""
        assert self.proc.poll() is None, "the load ended before the restart did"
        self.proc.send_signal(signal.SIGUSR1)  # no new calls; those running complete
        rc = self.proc.wait(timeout)
        stats = self.out.read_text(errors="replace")
        assert rc == 0, (f"sipp counted failed calls:\n{stats[-2500:]}\n"
                         + (self.errors.read_text()[-2000:] if self.errors.exists() else ""))
        return successful_calls(stats)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def successful_calls(stats: str) -> int:
    """sipp's final 'Successful call' cumulative count (the last column of that line)."""
    found = re.findall(r"Successful call\s*\|[^\n]*?(\d+)\s*$", stats, re.MULTILINE)
    assert found, stats[-2000:]
    return int(found[-1])


def _scenario(name: str) -> list[str]:
    if not name.endswith(".xml"):
        return ["-sn", name]
    path = SCENARIOS / name
    if not path.exists():
        path = EDGE_SCENARIOS / name
    return ["-sf", str(path)]


def sipp_output(proc: subprocess.Popen[bytes]) -> str:
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    lines = [ln for ln in out.splitlines() if "call" in ln.lower() or "error" in ln.lower()]
    return "\n".join(lines[-12:])
