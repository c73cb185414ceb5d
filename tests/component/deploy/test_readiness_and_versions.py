"""Each service a deployable unit: /health (live) apart from /ready (backends reachable,
synced), its own version in discovery, /health, /ready, MI ps and /metrics."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import aiohttp

import gateway
import services.registrar
from shared.rpc import JsonRpcClient
from shared.service import ServiceRuntime
from shared.service.version import CONTRACTS_VERSION, MESH_VERSION, service_version
from sipmesh.catalog import SERVICES
from tests.component.conftest import Registry
from tests.support.waiting import eventually


async def _get(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.json()


async def test_ready_follows_its_checks_while_health_stays_live(registry: Registry) -> None:
    _, disc = registry
    rt = ServiceRuntime("registrar", discovery=disc)
    backend_up = False
    rt.ready_check("store", lambda: backend_up)
    await rt.start()
    try:
        status, body = await _get(f"{rt.base_url}/ready")
        assert status == 503 and body["status"] == "not ready"
        assert body["failing"] == ["store"]
        probe = [sys.executable, "-m", "shared.service.probe", f"{rt.base_url}/ready"]
        # compose's healthcheck, run as compose runs it (the loop must keep serving).
        done = await asyncio.create_subprocess_exec(*probe)
        assert await done.wait() == 1
        status, body = await _get(f"{rt.base_url}/health")
        assert status == 200 and body["status"] == "passing"  # alive, just not ready
        backend_up = True
        done = await asyncio.create_subprocess_exec(*probe)
        assert await done.wait() == 0
        status, body = await _get(f"{rt.base_url}/ready")
        assert status == 200 and body == {
            "status": "ready", "service": "registrar", "id": rt.instance_id,
            "version": services.registrar.__version__, "failing": []}

        def broken() -> bool:
            raise ConnectionError("backend gone")

        rt.ready_check("cluster_sync", broken)  # a check that raises counts as failing
        status, body = await _get(f"{rt.base_url}/ready")
        assert status == 503 and body["failing"] == ["cluster_sync"]
    finally:
        await rt.stop()


async def test_draining_is_not_ready(registry: Registry) -> None:
    _, disc = registry
    rt = ServiceRuntime("demo", discovery=disc)
    await rt.start()
    url = f"{rt.base_url}/ready"
    assert (await _get(url))[0] == 200
    rt.draining = True  # what stop() sets first, before the stop hooks drain
    try:
        status, body = await _get(url)
        assert status == 503 and body["status"] == "draining"
    finally:
        await rt.stop()


async def test_service_version_in_discovery_health_ps_and_metrics(registry: Registry) -> None:
    server, disc = registry
    rt = ServiceRuntime("gateway", discovery=disc)
    await rt.start()
    try:
        [inst] = await server.registry.healthy("gateway")
        assert inst.meta["service_version"] == gateway.__version__
        assert inst.meta["contracts_version"] == CONTRACTS_VERSION
        assert inst.meta["version"] == MESH_VERSION
        assert (await _get(f"{rt.base_url}/health"))[1]["version"] == gateway.__version__
        client = JsonRpcClient(inst.meta["mi_url"])
        try:
            [proc] = (await client.call("ps"))["Processes"]
        finally:
            await client.close()
        assert proc["Version"] == gateway.__version__
        async with aiohttp.ClientSession() as http, http.get(f"{rt.base_url}/metrics") as r:
            text = await r.text()
        assert (f'sipmesh_service_info{{contracts="{CONTRACTS_VERSION}",mesh="{MESH_VERSION}",'
                f'service="gateway",version="{gateway.__version__}"}} 1.0') in text
    finally:
        await rt.stop()


def test_each_service_has_its_own_version_and_entry_point() -> None:
    # One process per service, all started at once: each is a Python start-up that
    # waits on imports, and one after the other they took 20 s on the loaded shared box.
    runs = []
    for spec in SERVICES:
        if spec.nodes_only:
            continue
        package = __import__(spec.module)
        for part in spec.module.split(".")[1:]:
            package = getattr(package, part)
        assert isinstance(package.__version__, str), spec.module
        assert service_version(spec.name) == package.__version__
        proc = subprocess.Popen([sys.executable, "-m", spec.module, "--version"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                env=dict(os.environ, SIPMESH_CONFIG=""))
        runs.append((spec, package.__version__, proc))
    try:
        for spec, version, proc in runs:
            stdout, stderr = proc.communicate(timeout=60)
            assert proc.returncode == 0, stderr
            assert stdout.strip() == (f"{spec.name} {version} "
                                      f"(contracts {CONTRACTS_VERSION}, sipmesh {MESH_VERSION})")
    finally:
        for _, _, proc in runs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_edge_skips_a_registrar_not_ready_and_trusts_an_older_one() -> None:
    from services.edge.registrar_client import RegistrarClient
    from shared.discovery import Instance

    client = RegistrarClient(expected=True)
    client._set([
        Instance("registrar", "new-syncing", "127.0.0.1", 1,
                 meta={"grpc": "127.0.0.1:7001", "ready": "0"}),
        Instance("registrar", "new-ready", "127.0.0.1", 2,
                 meta={"grpc": "127.0.0.1:7002", "ready": "1"}),
        Instance("registrar", "release-0.1.0", "127.0.0.1", 3,  # no "ready" key
                 meta={"grpc": "127.0.0.1:7003"}),
    ])
    assert client.targets == ["127.0.0.1:7002", "127.0.0.1:7003"]


def test_the_edge_sends_presence_requests_to_ready_nodes_and_503s_while_none_is() -> None:
    from services.edge.presence_client import PresenceClient
    from shared.discovery import Instance

    client = PresenceClient()
    assert not client.present and not client.available  # no presence in this mesh
    catching_up = Instance("presence", "new", "127.0.0.1", 1,
                           meta={"grpc": "127.0.0.1:7101", "ready": "0"})
    client._set([catching_up])
    # Registered but not ready: its requests are still for presence (503), not routed on.
    assert client.present and not client.available and client.targets == []
    client._set([catching_up, Instance("presence", "release-0.2.0", "127.0.0.1", 2,
                                       meta={"grpc": "127.0.0.1:7102"})])
    assert client.available and client.targets == ["127.0.0.1:7102"]


async def test_readiness_is_published_in_discovery_when_it_changes(registry: Registry) -> None:
    server, disc = registry
    rt = ServiceRuntime("registrar", discovery=disc)
    synced = False
    rt.ready_check("cluster_sync", lambda: synced)
    await rt.start()
    try:
        [inst] = await server.registry.instances("registrar")
        assert inst.meta["ready"] == "0"
        synced = True
        async def published() -> bool:
            return (await server.registry.instances("registrar"))[0].meta["ready"] == "1"

        await eventually(published, 10, "readiness published in discovery")
    finally:
        await rt.stop()
    assert await server.registry.instances("registrar") == []  # draining: not re-registered
