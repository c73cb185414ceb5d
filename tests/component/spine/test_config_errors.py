"""A configuration error stops a service at once: one clear line on stderr, exit status
78 (EX_CONFIG, ``shared.config.EXIT_CONFIG``), no traceback; and the supervisor does not
restart a child that exited so (the same settings would fail again), while it keeps
restarting one that crashed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import EXIT_CONFIG
from sipmesh.catalog import ChildSpec
from sipmesh.supervisor import MeshConfig, Supervisor

ROOT = Path(__file__).resolve().parents[3]

CASES = [
    ("gateway", "gateway", {"SIPMESH_GATEWAY_PORT": "eighty"}, "SIPMESH_GATEWAY_PORT"),
    ("gateway", "gateway", {"SIPMESH_GATEWAY_HOST": "0.0.0.0", "SIPMESH_GATEWAY_PORT": "0"},
     "SIPMESH_GATEWAY_TOKEN"),
    ("edge", "services.edge", {"SIPMESH_EDGE_WORKERS": "0"}, "workers"),
    ("edge", "services.edge", {"SIPMESH_EDGE_HTTP_HOST": "0.0.0.0"},
     "SIPMESH_EDGE_HTTP_TOKEN"),
    ("registrar", "services.registrar", {"SIPMESH_REGISTRAR_CLUSTER_MODE": "bogus"},
     "cluster_mode"),
    ("registrar", "services.registrar", {"SIPMESH_REGISTRAR_HTTP_HOST": "0.0.0.0"},
     "SIPMESH_REGISTRAR_HTTP_TOKEN"),
    ("registrar", "services.registrar", {"SIPMESH_EVENTS_RABBITMQ_URL": "http://broker"},
     "rabbitmq_url"),
]


def _env(tmp_path: Path, extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("SIPMESH_") and k != "CONSUL_HTTP_ADDR"}
    env.update(XDG_STATE_HOME=str(tmp_path), PYTHONUNBUFFERED="1",
               SIPMESH_EDGE_LISTEN="udp:127.0.0.1:0,tcp:127.0.0.1:0", **extra)
    return env


@pytest.mark.parametrize("name,module,extra,named", CASES,
                         ids=[f"{c[0]}-{next(iter(c[2]))}" for c in CASES])
def test_service_fails_fast_with_one_line(tmp_path: Path, name: str, module: str,
                                          extra: dict[str, str], named: str) -> None:
    done = subprocess.run([sys.executable, "-m", module], cwd=ROOT, env=_env(tmp_path, extra),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == EXIT_CONFIG, (done.stdout, done.stderr)
    errors = [line for line in done.stderr.splitlines() if "configuration error" in line]
    assert len(errors) == 1 and errors[0].startswith(f"{name}: configuration error: "), \
        done.stderr
    assert named in errors[0], f"the line should name the setting {named}: {errors[0]}"
    assert "Traceback" not in done.stderr + done.stdout


async def test_supervisor_does_not_restart_a_configuration_error(tmp_path: Path) -> None:
    lines: list[str] = []
    gave_up = asyncio.Event()
    crashed_twice_since = asyncio.Event()
    crashes_after: list[str] = []

    def out(line: str) -> None:
        lines.append(line)
        if line.startswith("exited edge") and "configuration error" in line:
            gave_up.set()
        elif gave_up.is_set() and line.startswith("exited crasher"):
            crashes_after.append(line)
            if len(crashes_after) >= 2:
                crashed_twice_since.set()

    env = _env(tmp_path, {"SIPMESH_EDGE_HTTP_HOST": "0.0.0.0"})  # no token: refused
    cfg = MeshConfig(registry_port=0, backoff_initial=0.05, backoff_max=0.1, stable_after=60)
    sup = Supervisor([ChildSpec("edge", "services.edge"),
                      ChildSpec("crasher", "tests.component.spine.exit_at_once")],
                     cfg, env=env, out=out)
    stop = asyncio.Event()
    run = asyncio.create_task(sup.run(stop))
    try:
        await asyncio.wait_for(gave_up.wait(), 60)
        # Two more restarts of the crashing child (each backoff longer than the edge's
        # would have been): the edge was not started again meanwhile.
        await asyncio.wait_for(crashed_twice_since.wait(), 30)
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
    assert sup.children["edge"].gave_up
    assert sum(1 for x in lines if x.startswith("started edge ")) == 1, lines
    assert any(x.startswith("exited edge pid ") and x.endswith(
        f"rc {EXIT_CONFIG}: configuration error, not restarted (fix the settings, restart)")
        for x in lines), lines
    assert any(x.startswith("sipmesh modes: discovery=embedded(http://127.0.0.1:")
               and "events=embedded(forwarded to the gateway)" in x for x in lines), lines


CLUSTERED_ENV = {
    "registrar": {"SIPMESH_REGISTRAR_CLUSTER_MODE": "full-sharing"},
    "dialog": {"SIPMESH_DIALOG_CLUSTER": "true"},
    "presence": {"SIPMESH_PRESENCE_CLUSTER": "true"},
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("service", sorted(CLUSTERED_ENV))
def test_a_pod_name_without_an_ordinal_is_one_line(
        service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A replica of a StatefulSet-shaped deployment (``node_id_from_hostname``) on a host
    whose name ends in no ordinal: every clustered service stops as the registrar does,
    one ``<service>: configuration error:`` line and EXIT_CONFIG, before serving."""
    import importlib
    import socket

    for key in [k for k in os.environ if k.startswith("SIPMESH_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path))
    unit = service.upper()
    for key, value in {**CLUSTERED_ENV[service], f"SIPMESH_{unit}_CLUSTER_SECRET": "s",
                       f"SIPMESH_{unit}_CLUSTER_NODE_ID_FROM_HOSTNAME": "true"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(socket, "gethostname", lambda: f"sipmesh-{service}")
    main = importlib.import_module(f"services.{service}.app").main
    assert main([]) == EXIT_CONFIG
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{service}: configuration error: [cluster] node_id_from_hostname: host name "
        f"'sipmesh-{service}' does not end in -<ordinal> (a StatefulSet pod's name does)"]
    assert "Traceback" not in out + err
