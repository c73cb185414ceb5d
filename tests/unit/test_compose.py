"""The deployment files in compose/ stay valid and in step with the code.

No Docker engine runs here, so the compose file is checked the way the handbook allows:
Debian's `docker-compose config` parses and validates it, and this test checks that what it
starts and configures exists in the code (modules, config fields) and that it is the
production shape (issue 20): every service the catalog clusters runs as two replicas, each
with its own node id in the catalog's cluster, their seed lists naming each other.
"""

from __future__ import annotations

import copy
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
from shared.cluster import ClusterConfig
from shared.config import load_section, section_env_name
from shared.discovery import DiscoveryConfig
from shared.events.config import EventsConfig
from shared.store import is_postgres_dsn
from sipmesh.catalog import SERVICES, ChildSpec

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
CLUSTER_SECRET = "compose-cluster-secret"


def setting_of(var: str) -> tuple[type[Any], str] | None:
    """The configuration class and field a ``SIPMESH_*`` variable sets, or None: a field of
    its service's section, else (``SIPMESH_<SERVICE>_CLUSTER_<FIELD>``) of the service's
    ``[<service>.cluster]`` section, as :func:`shared.config.load_section` reads them."""
    section, _, field = var.removeprefix("SIPMESH_").partition("_")
    cls = SECTIONS.get(section)
    if cls is None:
        return None
    if field in {f.name.upper() for f in dataclasses.fields(cls)}:
        return cls, field.lower()
    rest = field.removeprefix("CLUSTER_")
    if rest != field and rest in {f.name.upper() for f in dataclasses.fields(ClusterConfig)}:
        return ClusterConfig, rest.lower()
    return None


def replicated() -> list[ChildSpec]:
    """The catalog's services that cluster and are deployed with two replicas (the edge's
    cluster is the anycast one, for nodes sharing one address: its replicas are plain)."""
    return [s for s in SERVICES
            if s.clustered and not s.nodes_only and s.nodes_setting == "nodes"]


def cluster_problems(spec: ChildSpec, replicas: dict[str, dict[str, str]],
                     host_of: dict[str, str]) -> list[str]:
    """What is wrong with ``replicas`` (name -> environment) as the cluster of ``spec``:
    fewer than two, clustering off, another cluster id, node ids not distinct, secrets
    differing, or a seed list that does not name every replica at the address it
    advertises (``host_of``: the host a replica's peers reach it at). Each replica's
    settings are those of a host named as the replica (``ClusterConfig.for_host``: a
    StatefulSet's pod takes its node id from that name)."""
    if len(replicas) < 2:
        return [f"{spec.name}: {len(replicas)} replica(s), not 2"]
    problems: list[str] = []
    configs: dict[str, ClusterConfig] = {}
    for name, env in replicas.items():
        for key, value in spec.cluster_env:
            if key != "SIPMESH_EDGE_WORKERS" and str(env.get(key)) != value:
                problems.append(f"{name}: {key} is {env.get(key)!r}, clustering needs {value}")
        try:
            cfg = load_section(ClusterConfig, spec.cluster_section, environ=env).for_host(name)
            cfg.validate()
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
            continue
        configs[name] = cfg
        if cfg.cluster_id != spec.cluster_id:
            problems.append(f"{name}: cluster {cfg.cluster_id}, the catalog's is "
                            f"{spec.cluster_id}")
        host, _, port = cfg.advertise.rpartition(":")
        if host != host_of[name] or port != cfg.listen.rpartition(":")[2]:
            problems.append(f"{name}: advertises {cfg.advertise!r}, listens on {cfg.listen!r}")
        for tag in spec.sharing_tags:
            if tag not in cfg.sharing_tags:
                problems.append(f"{name}: no sharing tag {tag}")
    ids = [c.node_id for c in configs.values()]
    if len(set(ids)) != len(ids):
        problems.append(f"{spec.name}: node ids {ids} are not distinct")
    if len({c.secret for c in configs.values()}) > 1:
        problems.append(f"{spec.name}: the replicas do not share one secret")
    everyone = {c.node_id: c.advertise for c in configs.values()}
    for name, cfg in configs.items():
        seeds = {seed.node_id: seed.url for seed in cfg.seed_list()}
        if seeds != everyone:
            problems.append(f"{name}: seeds {seeds}, the replicas are {everyone}")
        if cfg.discovery_service != spec.name:
            problems.append(f"{name}: discovery_service {cfg.discovery_service!r}")
    return problems


@pytest.fixture(scope="module")
def rendered() -> dict[str, Any]:
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is missing: tests/peers/ensure.sh installs it"
    env = dict(os.environ, SIPMESH_GATEWAY_TOKEN="compose-test-token",
               SIPMESH_SERVICE_TOKEN="compose-service-token",
               SIPMESH_CLUSTER_SECRET=CLUSTER_SECRET)
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
            if var.startswith("SIPMESH_"):
                assert setting_of(var) is not None, f"{name}: {var} sets nothing"
    assert setting_of("SIPMESH_REGISTRAR_CLUSTER_NODE_ID") == (ClusterConfig, "node_id")
    assert setting_of("SIPMESH_REGISTRAR_CLUSTER_MODE") == (RegistrarConfig, "cluster_mode")
    assert setting_of("SIPMESH_REGISTRAR_CLUSTER_NODE") is None
    assert setting_of("SIPMESH_REGISTRAR_NODE_ID") is None


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


def _replicas(doc: dict[str, Any], module: str) -> dict[str, dict[str, str]]:
    return {name: {k: str(v) for k, v in svc.get("environment", {}).items()}
            for name, svc in _sipmesh_services(doc).items() if svc["command"][-1] == module}


def test_every_clustered_service_runs_two_replicas_seeding_each_other(
        rendered: dict[str, Any]) -> None:
    """Production shape (issue 20): two replicas of each service the catalog clusters,
    each its own compose service (its container name is its address), clustering on, in
    the catalog's cluster, with a node id of its own, one shared secret, and a seed list
    naming both at the addresses they advertise. The edges are two, unclustered."""
    specs = replicated()
    assert {s.name for s in specs} == {"registrar", "dialog", "presence"}
    for spec in specs:
        replicas = _replicas(rendered, spec.module)
        assert cluster_problems(spec, replicas, {n: n for n in replicas}) == []
        for name, env in replicas.items():
            unit = spec.name.upper()
            assert env[f"SIPMESH_{unit}_HTTP_ADVERTISE"] == name
            assert env[f"SIPMESH_{unit}_GRPC_ADVERTISE"] == name
            assert env[section_env_name(spec.cluster_section, "secret")] == CLUSTER_SECRET
    assert len(_replicas(rendered, "services.edge")) >= 2
    # Dialogs are written by both replicas: each keeps its own table in the shared database.
    dialogs = [load_section(DialogConfig, "dialog", environ=env)
               for env in _replicas(rendered, "services.dialog").values()]
    assert len({(d.db_url, d.dialog_table) for d in dialogs}) == len(dialogs)


def test_the_replica_check_catches_a_broken_cluster(rendered: dict[str, Any]) -> None:
    """cluster_problems is not a rubber stamp: a shared node id, a seed list missing the
    twin, clustering turned off and a single replica are each reported."""
    [spec] = [s for s in replicated() if s.name == "registrar"]
    good = _replicas(rendered, spec.module)
    hosts = {n: n for n in good}
    key = section_env_name(spec.cluster_section, "node_id")
    seeds = section_env_name(spec.cluster_section, "seeds")
    broken = copy.deepcopy(good)
    broken["registrar-2"][key] = broken["registrar-1"][key]
    assert any("not distinct" in p for p in cluster_problems(spec, broken, hosts))
    broken = copy.deepcopy(good)
    broken["registrar-1"][seeds] = "1@registrar-1:9072"
    assert any("seeds" in p for p in cluster_problems(spec, broken, hosts))
    broken = copy.deepcopy(good)
    broken["registrar-2"]["SIPMESH_REGISTRAR_CLUSTER_MODE"] = "none"
    assert any("clustering needs" in p for p in cluster_problems(spec, broken, hosts))
    assert cluster_problems(spec, {"registrar-1": good["registrar-1"]}, hosts)


def gateway_queue_problems(gateways: dict[str, dict[str, str]]) -> list[str]:
    """What is wrong with the event queue of the gateway replicas ``gateways`` (name ->
    environment) in RabbitMQ mode: they must consume one durable queue named in the
    configuration (a queue named after a container's or pod's host name is lost when it
    is recreated, and replicas on queues of their own each deliver every event: twice to
    a subscription both know), and more than one replica needs the shared PostgreSQL
    store (each follows the others' subscriptions through it)."""
    problems: list[str] = []
    queues: dict[str, list[str]] = {}
    for name, env in gateways.items():
        events = load_section(EventsConfig, "events", environ=env)
        if not events.rabbitmq:
            continue
        if not events.consumer_queue:
            problems.append(f"{name}: no [events] consumer_queue (a queue of its own, "
                            "named after its host name)")
            continue
        queues.setdefault(events.consumer_queue, []).append(name)
        if len(gateways) > 1 and not is_postgres_dsn(events.store):
            problems.append(f"{name}: replicas need a shared PostgreSQL [events] store, "
                            f"not {events.store or 'the SQLite default'!r}")
    if len(queues) > 1:
        problems.append(f"gateway replicas on different queues, each delivering every "
                        f"event: {sorted(queues.items())}")
    return problems


def test_the_gateways_share_one_durable_queue(rendered: dict[str, Any]) -> None:
    """Issue 20: the gateway replicas consume one durable queue (each event delivered
    once, the events published while one restarts or is recreated waiting there) and
    share the subscriptions in PostgreSQL; the check catches a gateway left on its
    container's changing host name, a second one on a queue of its own and replicas on
    SQLite."""
    gateways = _replicas(rendered, "gateway")
    assert gateways
    assert gateway_queue_problems(gateways) == []
    [(name, env)] = gateways.items()
    assert env["SIPMESH_EVENTS_CONSUMER_QUEUE"] == "sipmesh.events.gateway"
    assert gateway_queue_problems({name: env, "gateway2": env}) == []  # a second replica
    unset = {name: {k: v for k, v in env.items() if k != "SIPMESH_EVENTS_CONSUMER_QUEUE"}}
    assert gateway_queue_problems(unset) != []
    own = dict(env, SIPMESH_EVENTS_CONSUMER_QUEUE="sipmesh.events.gateway.gateway2")
    assert gateway_queue_problems({name: env, "gateway2": own}) != []
    sqlite = {k: v for k, v in env.items() if k != "SIPMESH_EVENTS_STORE"}
    assert gateway_queue_problems({name: sqlite, "gateway2": sqlite}) != []
    assert gateway_queue_problems({name: sqlite}) == []  # one gateway may keep SQLite
