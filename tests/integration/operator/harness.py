"""A real ``sipmesh up`` (gateway + edge on free ports) driven the way an operator does:
opensips-cli through the gateway, the ``sipmesh`` CLI, sipp for traffic.

The edge trusts no network of its own (``[edge] trusted = []``): what it trusts comes from
the address table in the test's store, so the tests see the table at work from 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from tests.integration.spine.meshproc import ROOT, MeshProcess
from tests.support import opensips_cli
from tests.support.ports import reserve_port
from tests.support.waiting import eventually_sync

MI = ROOT / "contracts" / "mi"


@dataclass
class OperatorMesh:
    mesh: MeshProcess
    sip_port: int
    store: Path
    tmp: Path

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def cli(self, *cmd: str) -> Any:
        """``opensips-cli -x mi CMD ARGS`` through the gateway; the JSON it prints, checked
        against the command's schema in contracts/mi when it has one."""
        run = opensips_cli.mi(self.mesh.gateway_url, *cmd)
        assert run.returncode == 0, run.stderr + run.stdout
        answer = json.loads(run.stdout)
        schema = MI / f"{cmd[0]}.json"
        if schema.exists():
            jsonschema.validate(answer, json.loads(schema.read_text())["result"])
        return answer

    def cli_error(self, *cmd: str) -> str:
        run = opensips_cli.mi(self.mesh.gateway_url, *cmd)
        return run.stdout + run.stderr

    def sipmesh(self, *args: str) -> subprocess.CompletedProcess[str]:
        return self.mesh.cli(*args)

    def uas(self, port: int, scenario: Sequence[str] = ("-sn", "uas")) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            ["sipp", *scenario, "-i", "127.0.0.1", "-p", str(port), "-nostdin", "-bind_local"],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        eventually_sync(lambda: _bound_udp(port) or proc.poll() is not None, 10,
                        f"sipp UAS on {port}")
        assert proc.poll() is None
        return proc

    def call(self, target: str, *, calls: int = 1, rate: int = 10, timeout: int = 15,
             recv_timeout: float = 5.0, service: str = "service",
             ) -> subprocess.CompletedProcess[str]:
        """sipp's uac: ``calls`` calls to ``target`` through the edge (0: all answered);
        sipp's error log (the unexpected messages it saw) is appended to ``stdout``."""
        port = reserve_port()
        errors = self.tmp / f"uac-{port}-errors.log"
        done = subprocess.run(
            ["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(port), "-rsa", self.edge,
             target, "-s", service, "-m", str(calls), "-r", str(rate), "-d", "0", "-nostdin",
             "-timeout", f"{timeout}s", "-timeout_error",
             "-recv_timeout", str(int(recv_timeout * 1000)), "-trace_err",
             "-error_file", str(errors)],
            cwd=self.tmp, capture_output=True, text=True, timeout=timeout + 30)
        if errors.exists():
            done.stdout += errors.read_text(errors="replace")
        return done


    def call_background(self, target: str, *, calls: int, rate: int,
                        timeout: int = 10) -> subprocess.Popen[bytes]:
        """sipp's uac running while the test looks at the mesh; ``wait()`` for its code."""
        port = reserve_port()
        return subprocess.Popen(
            ["sipp", "-sn", "uac", "-i", "127.0.0.1", "-p", str(port), "-rsa", self.edge,
             target, "-m", str(calls), "-r", str(rate), "-d", "0", "-nostdin",
             "-timeout", f"{timeout}s", "-timeout_error", "-recv_timeout", "3000"],
            cwd=self.tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _bound_udp(port: int) -> bool:
    text = Path("/proc/net/udp").read_text()
    return f":{port:04X} " in text


def start(tmp: Path, edge: str = "", *, trust_loopback: bool = False,
          **env: str) -> OperatorMesh:
    """The mesh with ``edge`` appended to the [edge] section of its configuration file
    (``trust_loopback``: keep the default ``[edge] trusted``, loopback)."""
    if shutil.which("sipp") is None:
        pytest.fail("sipp is not installed: run tests/peers/ensure.sh (make test does)")
    store = tmp / "store.sqlite"
    config = tmp / "sipmesh.toml"
    trusted = "" if trust_loopback else "trusted = []\n"
    config.write_text(f"[edge]\n{trusted}{edge}\n")
    port = reserve_port()
    env.setdefault("SIPMESH_EDGE_LISTEN", f"udp:127.0.0.1:{port}")
    port = int(env["SIPMESH_EDGE_LISTEN"].split(",")[0].rsplit(":", 1)[1])
    mesh = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway,edge",
                       SIPMESH_CONFIG=str(config), SIPMESH_REGISTRAR_STORE=str(store),
                       PYTHONPATH=str(ROOT), **env)
    try:
        mesh.line(r"^endpoint edge sip ", timeout=40)
    except BaseException:
        mesh.stop()
        raise
    return OperatorMesh(mesh, port, store, tmp)
