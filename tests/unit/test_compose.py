"""The deployment files in compose/ stay valid and in step with the code.

No Docker engine runs here, so the compose file is checked the way the handbook allows:
Debian's `docker-compose config` parses and validates it, and this test checks that what it
starts and configures exists in the code (modules, config fields).
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig
from services.dialog.config import DialogConfig
from services.edge.config import EdgeConfig
from services.freeswitch.config import FreeswitchConfig
from services.media.config import MediaConfig
from services.presence.config import PresenceConfig
from services.registrar.config import RegistrarConfig
from services.siprec.config import SiprecConfig
from shared.discovery import DiscoveryConfig
from shared.events.config import EventsConfig
from sipmesh.catalog import SERVICES

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "compose" / "docker-compose.yml"
SECTIONS = {
    "GATEWAY": GatewayConfig,
    "EDGE": EdgeConfig,
    "REGISTRAR": RegistrarConfig,
    "MEDIA": MediaConfig,
    "FREESWITCH": FreeswitchConfig,
    "DIALOG": DialogConfig,
    "SIPREC": SiprecConfig,
    "PRESENCE": PresenceConfig,
    "DISCOVERY": DiscoveryConfig,
    "EVENTS": EventsConfig,
}


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: tests/peers/ensure.sh installs it"
    env = dict(os.environ, SIPMESH_GATEWAY_TOKEN="compose-test-token",
               SIPMESH_SERVICE_TOKEN="compose-service-token")
    # docker-compose 1.x prints the resolved file as YAML only.
    out = subprocess.run([exe, "-f", str(COMPOSE), "config"], capture_output=True, text=True,
                         env=env, timeout=60)
    assert out.returncode == 0, out.stderr
    doc: dict[str, Any] = yaml.safe_load(out.stdout)
    return doc


def _sipmesh_services(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {n: s for n, s in doc["services"].items() if s.get("image", "").startswith("sipmesh")}


def test_compose_file_validates_and_runs_every_mesh_service(rendered: dict[str, Any]) -> None:
    mine = _sipmesh_services(rendered)
    # Demo-only services (started by `sipmesh up --nodes N` to show clustering) are not deployed.
    modules = {spec.module for spec in SERVICES if not spec.nodes_only}
    started = {s["command"][-1] for s in mine.values()}
    assert started == modules, f"compose starts {started}, the mesh has {modules}"
    for name, svc in mine.items():
        module = svc["command"][-1]
        assert importlib.util.find_spec(module) is not None, f"{name}: no module {module}"


def test_every_sipmesh_variable_names_a_real_setting(rendered: dict[str, Any]) -> None:
    for name, svc in _sipmesh_services(rendered).items():
        for var in svc.get("environment", {}):
            if not var.startswith("SIPMESH_"):
                continue
            section, _, field = var.removeprefix("SIPMESH_").partition("_")
            cls = SECTIONS.get(section)
            assert cls is not None, f"{name}: {var}: unknown section {section}"
            fields = {f.name.upper() for f in dataclasses.fields(cls)}
            assert field in fields, f"{name}: {var}: {cls.__name__} has no field {field.lower()}"


def test_public_gateway_is_given_a_token(rendered: dict[str, Any]) -> None:
    gw = rendered["services"]["gateway"]["environment"]
    assert gw["SIPMESH_GATEWAY_HOST"] == "0.0.0.0"
    assert gw["SIPMESH_GATEWAY_TOKEN"] == "compose-test-token"


def test_each_service_has_its_own_image_and_a_readiness_healthcheck(
        rendered: dict[str, Any]) -> None:
    """Production shape (issue 20): one image per service (the Dockerfile's SERVICE build
    arg), and a container is healthy only while the service's /ready answers 200 on the
    HTTP port its own environment sets."""
    from shared.service.probe import main as probe_main

    for name, svc in _sipmesh_services(rendered).items():
        module = svc["command"][-1]
        unit = module.removeprefix("services.")
        assert svc["build"]["args"] == {"SERVICE": unit}, name
        assert svc["image"] == f"sipmesh-{unit}:latest", name
        check = svc["healthcheck"]
        assert check["test"][:4] == ["CMD", "python", "-m", "shared.service.probe"], name
        env = svc["environment"]
        port = env.get(f"SIPMESH_{unit.upper()}_HTTP_PORT") or env.get(
            "SIPMESH_GATEWAY_PORT")
        assert check["test"][4] == f"http://127.0.0.1:{port}/ready", name
        assert importlib.util.find_spec("shared.service.probe") is not None
    assert probe_main(["http://127.0.0.1:9/ready"]) == 1  # nothing there: unhealthy
    assert probe_main([]) == 2
    dockerfile = (ROOT / "compose" / "Dockerfile").read_text()
    assert "ARG SERVICE=" in dockerfile and "sipmesh-${SIPMESH_SERVICE}" in dockerfile
