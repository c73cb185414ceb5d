"""A real mesh for the presence tests: `sipmesh up` in its default configuration (the
default routing, embedded registry, presence in its SQLite file) with the gateway, an
edge, a registrar and the presence service; sipp (or baresip) as phones.

Nothing sleeps to synchronise: each helper polls an observable condition (an MI answer, a
process exit, a stdout line) with a deadline.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.integration.dialog.harness import rpc
from tests.integration.edge.edge_harness import free_port, stop_process
from tests.integration.spine.meshproc import MeshProcess
from tests.support.waiting import eventually_sync

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    return eventually_sync(predicate, timeout, what, interval=0.05)


class PresenceMesh:
    def __init__(self, tmp: Path, **env: str) -> None:
        self.tmp = tmp
        self.sip_port = free_port()
        settings = {
            "SIPMESH_MESH_SERVICES": "gateway,edge,registrar,presence",
            "SIPMESH_EDGE_LISTEN": f"udp:127.0.0.1:{self.sip_port}",
            "SIPMESH_EDGE_UVLOOP": "false",
            "SIPMESH_PRESENCE_UVLOOP": "false",
            "XDG_STATE_HOME": str(tmp / "state"),
            # Clustered, the first node of a new cluster waits this long for a donor
            # before it counts itself synced and takes requests (default 5 s).
            "SIPMESH_PRESENCE_CLUSTER_SEED_FALLBACK_INTERVAL": "1",
        }
        settings.update(env)
        self.mesh = MeshProcess(tmp, **settings)
        self.sipp: list[subprocess.Popen[bytes]] = []
        nodes = int(env.get("SIPMESH_MESH_NODES", "1"))
        try:
            self.mesh.line(r"^endpoint edge sip ", 30)
            self.seen_lines(r"^endpoint presence grpc ", nodes, 30)
            # Clustered, a node takes requests once its links are up and it has read the
            # shared store again (services/presence/app.py): the first node of a new
            # cluster after [presence.cluster] seed_fallback_interval (1 s here).
            wait_for(lambda: self.ready_nodes() == nodes, 30, "the presence nodes ready")
        except BaseException:
            self.stop()
            raise

    def ready_nodes(self) -> int:
        """Presence instances registered and ready (those the edge sends requests to)."""
        url = f"{self.mesh.registry_url}/v1/instances?service=presence&passing=1"
        with urllib.request.urlopen(url, timeout=10) as resp:
            listed = json.loads(resp.read())["instances"]
        return sum(1 for i in listed if i["meta"].get("ready") == "1")

    def seen_lines(self, pattern: str, count: int, timeout: float) -> list[str]:
        """Waits until `count` stdout lines of `sipmesh up` matched `pattern` (all time)."""
        import re
        import time

        deadline = time.monotonic() + timeout
        while True:
            found = [ln for ln in self.mesh.seen if re.search(pattern, ln)]
            if len(found) >= count:
                return found
            self.mesh.expect(pattern, max(0.1, deadline - time.monotonic()))

    @property
    def edge(self) -> str:
        return f"127.0.0.1:{self.sip_port}"

    def mi(self, method: str, params: Any = None) -> Any:
        answer = rpc(self.mesh.gateway_url, method, params)
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def subscriptions(self, presentity: str) -> list[dict[str, Any]]:
        subs = self.mi("subs_phtable_list")["Subscriptions"]
        return [s for s in subs if s["pres_uri"] == f"sip:{presentity}"]

    def publications(self, presentity: str) -> list[dict[str, Any]]:
        pubs = self.mi("pres_phtable_list")["Presentities"]
        return [p for p in pubs if p["pres_uri"] == f"sip:{presentity}"]

    def sipp_run(self, scenario: str, service: str, *, keys: Sequence[tuple[str, str]] = (),
                 background: bool = False, timeout: int = 60,
                 edge: str | None = None) -> subprocess.Popen[bytes]:
        port = free_port()
        cmd = ["sipp", "-sf", str(SCENARIOS / scenario), "-i", "127.0.0.1", "-p", str(port),
               edge or self.edge, "-s", service, "-m", "1", "-nostdin", "-timeout", f"{timeout}s",
               "-timeout_error", "-trace_err", "-trace_msg",
               "-error_file", str(self.tmp / f"{scenario}_{port}_err.log"),
               "-message_file", str(self.tmp / f"{scenario}_{port}_msg.log")]
        for name, value in keys:
            cmd += ["-key", name, value]
        proc = subprocess.Popen(cmd, cwd=self.tmp, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT)
        proc.args = cmd
        self.sipp.append(proc)
        if not background:
            proc.wait(timeout + 30)
        return proc

    def messages(self, proc: subprocess.Popen[bytes]) -> str:
        """What a sipp run sent and received (its -message_file)."""
        args = list(proc.args)  # type: ignore[arg-type]
        path = Path(str(args[args.index("-message_file") + 1]))
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        for proc in self.sipp:
            stop_process(proc)
        self.mesh.stop()


def sipp_failure(mesh: PresenceMesh, proc: subprocess.Popen[bytes]) -> str:
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    return "\n".join(out.splitlines()[-15:]) + "\n--- messages ---\n" + \
        mesh.messages(proc)[-3000:]
