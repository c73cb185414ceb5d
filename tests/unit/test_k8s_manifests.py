"""The Kubernetes manifests in deploy/k8s stay valid and in step with the code (issue 20).

Kubernetes cannot run here, so the manifests are checked offline: the base and the
production overlay are rendered by :func:`render` (the subset of kustomize they use:
resources, namespace, labels, images, replicas and strategic-merge patches), and when
``kubectl`` is on the PATH its own ``kubectl kustomize`` must render the same objects.
Every object is validated against the Kubernetes OpenAPI schemas by kubernetes-validate
(PyPI), strictly (an unknown field fails), and the workloads are checked against the
catalog and the services' configuration classes: a Deployment per unclustered service, a
StatefulSet of two replicas per clustered one (issue 20's production shape), whose pods,
rendered as Kubernetes would start them (``$(POD_NAME)`` expanded, the pod name as host
name), have distinct node ids and seed lists naming each other at their headless
Service's DNS names, with a PodDisruptionBudget letting one go at a time.
"""

from __future__ import annotations

import copy
import importlib.util
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.cluster import ClusterConfig
from shared.config import load_section
from shared.service.runtime import RuntimeConfig
from sipmesh.catalog import SERVICES
from tests.unit.test_compose import (
    cluster_problems,
    gateway_queue_problems,
    replicated,
    setting_of,
)

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.32"  # the oldest Kubernetes the manifests are promised to work on
Obj = dict[str, Any]
WORKLOADS = ("Deployment", "StatefulSet")


def _merge(base: Any, patch: Any) -> Any:
    """A strategic merge of ``patch`` into ``base``: maps merge key by key, lists of maps
    with a ``name`` merge item by item on it (containers, env, ports), other lists and
    scalars are replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if (isinstance(base, list) and isinstance(patch, list) and patch
            and all(isinstance(x, dict) and "name" in x for x in base + patch)):
        merged = [dict(x) for x in base]
        for item in patch:
            for i, old in enumerate(merged):
                if old["name"] == item["name"]:
                    merged[i] = _merge(old, item)
                    break
            else:
                merged.append(copy.deepcopy(item))
        return merged
    return copy.deepcopy(patch)


def _label(obj: Obj, pairs: dict[str, str]) -> None:
    obj["metadata"].setdefault("labels", {}).update(pairs)


def render(directory: Path) -> list[Obj]:
    """Renders one kustomization directory (recursively for its resources)."""
    kust = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kust) - {"apiVersion", "kind", "resources", "namespace", "labels",
                           "images", "replicas", "patches"}
    assert not unknown, f"{directory}: render() does not implement {unknown}"
    objs: list[Obj] = []
    for res in kust.get("resources", []):
        path = directory / res
        if path.is_dir():
            objs += render(path)
        else:
            objs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for entry in kust.get("patches", []):
        patch = yaml.safe_load((directory / entry["path"]).read_text())
        [target] = [i for i, o in enumerate(objs) if o["kind"] == patch["kind"]
                    and o["metadata"]["name"] == patch["metadata"]["name"]]
        objs[target] = _merge(objs[target], patch)
    for obj in objs:
        if "namespace" in kust:
            obj["metadata"]["namespace"] = kust["namespace"]
        for group in kust.get("labels", []):
            _label(obj, group["pairs"])  # metadata only (kustomize's includeSelectors: false)
        if obj["kind"] in WORKLOADS:
            for rep in kust.get("replicas", []):
                if rep["name"] == obj["metadata"]["name"]:
                    obj["spec"]["replicas"] = rep["count"]
            for container in obj["spec"]["template"]["spec"]["containers"]:
                for img in kust.get("images", []):
                    name, _, tag = container["image"].partition(":")
                    if name == img["name"]:
                        container["image"] = (f"{img.get('newName', name)}:"
                                              f"{img.get('newTag', tag)}")
    return objs


def _keyed(objs: list[Obj]) -> dict[tuple[str, str], Obj]:
    return {(o["kind"], o["metadata"]["name"]): o for o in objs}


TREES = {"base": K8S / "base", "production": K8S / "overlays" / "production"}


@pytest.fixture(scope="module", params=sorted(TREES))
def rendered(request: pytest.FixtureRequest) -> list[Obj]:
    return render(TREES[request.param])


def test_every_object_validates_against_the_kubernetes_schemas(rendered: list[Obj]) -> None:
    assert rendered
    for obj in rendered:
        try:
            kubernetes_validate.validate(obj, KUBE_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:  # pragma: no cover - on failure
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message} at "
                        f"{'.'.join(str(p) for p in exc.path)}")


def test_a_broken_manifest_is_caught() -> None:
    """The validator is not a rubber stamp: a typo'd field and a wrong type both fail."""
    dep = copy.deepcopy(_keyed(render(TREES["base"]))[("Deployment", "sipmesh-edge")])
    dep["spec"]["replica"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)
    dep = copy.deepcopy(_keyed(render(TREES["base"]))[("Deployment", "sipmesh-edge")])
    dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = "thirty"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl is not installed")
@pytest.mark.parametrize("tree", sorted(TREES))
def test_kubectl_kustomize_renders_the_same_objects(tree: str) -> None:
    out = subprocess.run(["kubectl", "kustomize", str(TREES[tree])], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    theirs = _keyed([d for d in yaml.safe_load_all(out.stdout) if d])
    mine = _keyed(render(TREES[tree]))
    assert theirs.keys() == mine.keys()
    for key, obj in mine.items():
        assert theirs[key] == obj, key


def _deployments(objs: list[Obj]) -> dict[str, Obj]:
    """The workloads (Deployments and StatefulSets) by name."""
    return {o["metadata"]["name"]: o for o in objs if o["kind"] in WORKLOADS}


def test_one_deployment_and_service_per_catalog_service(rendered: list[Obj]) -> None:
    deps = _deployments(rendered)
    services = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "Service"}
    for spec in SERVICES:
        if spec.nodes_only:
            continue  # the cluster demo is not deployed
        name = f"sipmesh-{spec.name}"
        assert name in deps and name in services, f"{spec.name} has no Deployment/Service"
        [container] = deps[name]["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["python", "-m", spec.module]
        assert importlib.util.find_spec(spec.module) is not None
        selector = deps[name]["spec"]["selector"]["matchLabels"]
        assert services[name]["spec"]["selector"] == selector
        labels = deps[name]["spec"]["template"]["metadata"]["labels"]
        assert selector.items() <= labels.items()
    expected = {f"sipmesh-{s.name}" for s in SERVICES if not s.nodes_only}
    assert deps.keys() == expected


def test_probes_drain_and_rolling_update(rendered: list[Obj]) -> None:
    """Ready on /ready, live on /health, both on the port the service's own settings bind;
    one pod at a time on a rolling update (a Deployment's new pod is ready before an old
    one goes; a StatefulSet replaces one pod and waits for it to be ready again, its
    PodDisruptionBudget lets an eviction take one), and the termination bound leaves the
    service's drain room after the preStop pause."""
    pdbs = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "PodDisruptionBudget"}
    for name, dep in _deployments(rendered).items():
        spec = dep["spec"]
        if dep["kind"] == "Deployment":
            assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
        else:
            assert spec["updateStrategy"] == {"type": "RollingUpdate"}, name
            assert pdbs[name]["spec"] == {"maxUnavailable": 1,
                                          "selector": spec["selector"]}, name
        pod = spec["template"]["spec"]
        [container] = pod["containers"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        unit = name.removeprefix("sipmesh-").upper()
        port = int(env.get(f"SIPMESH_{unit}_HTTP_PORT") or env["SIPMESH_GATEWAY_PORT"])
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == port, name
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
        assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
        pause = int(container["lifecycle"]["preStop"]["exec"]["command"][1])
        assert pod["terminationGracePeriodSeconds"] >= pause + RuntimeConfig().drain_timeout
        grpc = env.get(f"SIPMESH_{unit}_GRPC_PORT")
        if grpc is not None:
            assert ports["grpc"] == int(grpc), name


def test_every_sipmesh_variable_names_a_real_setting(rendered: list[Obj]) -> None:
    config_maps = {o["metadata"]["name"]: o for o in rendered if o["kind"] == "ConfigMap"}
    secrets_used: set[str] = set()
    for name, dep in _deployments(rendered).items():
        [container] = dep["spec"]["template"]["spec"]["containers"]
        names = [e["name"] for e in container["env"]]
        assert len(names) == len(set(names)), f"{name}: a variable set twice"
        for ref in container["envFrom"]:
            names += list(config_maps[ref["configMapRef"]["name"]]["data"])
        for e in container["env"]:
            if "secretKeyRef" in e.get("valueFrom", {}):
                secrets_used.add(e["valueFrom"]["secretKeyRef"]["key"])
        for var in names:
            if var.startswith("SIPMESH_"):
                assert setting_of(var) is not None, f"{name}: {var} sets nothing"
    # The README tells the operator to create exactly these keys.
    readme = (ROOT / "README.md").read_text()
    for key in secrets_used:
        assert f"--from-literal={key}=" in readme, f"README does not name secret key {key}"


def pod_env(workload: Obj, pod: str, secrets: dict[str, str]) -> dict[str, str]:
    """The environment Kubernetes gives pod ``pod`` of ``workload``: ConfigMap values
    aside, literal values with ``$(VAR)`` expanded from the variables before them, the
    downward API (``metadata.name`` is the pod's name) and ``secrets`` by key."""
    [container] = workload["spec"]["template"]["spec"]["containers"]
    env: dict[str, str] = {}
    for item in container["env"]:
        if "value" in item:
            env[item["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]),
                                       item["value"])
            continue
        source = item["valueFrom"]
        if "fieldRef" in source:
            field = source["fieldRef"]["fieldPath"]
            env[item["name"]] = pod if field == "metadata.name" else f"<{field}>"
        else:
            env[item["name"]] = secrets[source["secretKeyRef"]["key"]]
    return env


def _statefulset_problems(objs: list[Obj], spec: Any) -> list[str]:
    sets = {o["metadata"]["name"]: o for o in objs if o["kind"] == "StatefulSet"}
    services = {o["metadata"]["name"]: o for o in objs if o["kind"] == "Service"}
    name = f"sipmesh-{spec.name}"
    sts = sets.get(name)
    if sts is None:
        return [f"{name} is not a StatefulSet"]
    replicas = sts["spec"]["replicas"]
    if replicas < 2:
        return [f"{name}: {replicas} replica(s)"]
    peers = services.get(sts["spec"]["serviceName"])
    if peers is None:
        return [f"{name}: no headless Service {sts['spec']['serviceName']}"]
    problems = []
    if peers["spec"].get("clusterIP") != "None" or \
            not peers["spec"].get("publishNotReadyAddresses"):
        problems.append(f"{name}: {peers['metadata']['name']} is not headless and published "
                        "before ready (a syncing pod must be reachable by its twin)")
    if peers["spec"]["selector"] != sts["spec"]["selector"]["matchLabels"]:
        problems.append(f"{name}: the peers Service selects other pods")
    [container] = sts["spec"]["template"]["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    if [p["targetPort"] for p in peers["spec"]["ports"]] != ["cluster"] or "cluster" not in ports:
        problems.append(f"{name}: the peers Service does not carry the cluster port")
    secrets = {"cluster-secret": "k8s-cluster-secret", "service-token": "t",
               "database-url": "postgresql://db/sipmesh", "rabbitmq-url": "amqp://mq/"}
    pods = {f"{name}-{i}": pod_env(sts, f"{name}-{i}", secrets) for i in range(replicas)}
    domain = peers["metadata"]["name"]
    problems += cluster_problems(spec, pods, {pod: f"{pod}.{domain}" for pod in pods})
    for pod, env in pods.items():
        listen = env.get(f"SIPMESH_{spec.name.upper()}_CLUSTER_LISTEN", "")
        if listen.rpartition(":")[2] != str(ports.get("cluster")):
            problems.append(f"{pod}: listens on {listen!r}, the cluster port is "
                            f"{ports.get('cluster')}")
    return problems


def test_clustered_services_are_statefulsets_of_two_seeding_each_other(
        rendered: list[Obj]) -> None:
    """Production shape (issue 20): each service the catalog clusters is a StatefulSet of
    two pods sharing one configuration; as started (pod names sipmesh-<service>-0/-1),
    each is in the catalog's cluster with node id 1 + its ordinal, advertises its own DNS
    name under the headless Service (published before ready), and seeds both; they share
    the secret from sipmesh-secrets."""
    specs = replicated()
    assert specs
    for spec in specs:
        assert _statefulset_problems(rendered, spec) == [], spec.name
        sts = _deployments(rendered)[f"sipmesh-{spec.name}"]
        ids = {load_section(ClusterConfig, spec.cluster_section, environ=pod_env(
            sts, f"sipmesh-{spec.name}-{i}", {"cluster-secret": "s", "service-token": "t",
                                              "database-url": "d", "rabbitmq-url": "r"})
        ).for_host(f"sipmesh-{spec.name}-{i}").node_id for i in range(2)}
        assert ids == {1, 2}


def test_the_statefulset_check_catches_a_broken_cluster() -> None:
    """_statefulset_problems is not a rubber stamp: one replica, a node id not taken from
    the pod name (both pods node 1), and a peers Service that is not headless are each
    reported."""
    base = render(TREES["base"])
    [spec] = [s for s in replicated() if s.name == "registrar"]

    def broken(change: Any) -> list[str]:
        objs = copy.deepcopy(base)
        change(objs)
        return _statefulset_problems(objs, spec)

    def find(objs: list[Obj], kind: str, name: str) -> Obj:
        [obj] = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
        return obj

    def one_replica(objs: list[Obj]) -> None:
        find(objs, "StatefulSet", "sipmesh-registrar")["spec"]["replicas"] = 1

    def fixed_id(objs: list[Obj]) -> None:
        sts = find(objs, "StatefulSet", "sipmesh-registrar")
        [container] = sts["spec"]["template"]["spec"]["containers"]
        container["env"] = [e for e in container["env"]
                            if e["name"] != "SIPMESH_REGISTRAR_CLUSTER_NODE_ID_FROM_HOSTNAME"]

    def not_headless(objs: list[Obj]) -> None:
        del find(objs, "Service", "sipmesh-registrar-peers")["spec"]["clusterIP"]

    assert _statefulset_problems(base, spec) == []
    assert any("replica" in p for p in broken(one_replica))
    assert any("not distinct" in p for p in broken(fixed_id))
    assert any("headless" in p for p in broken(not_headless))


def test_the_gateway_pods_share_one_durable_queue(rendered: list[Obj]) -> None:
    """Issue 20: the gateway pods (two in the production overlay; a rollout starts a new
    one beside the old) consume one durable queue as competing consumers, so each event
    reaches a subscriber once and the events published while a pod restarts wait for the
    other or for it; the check catches a queue named after the pod."""
    gateway = _deployments(rendered)["sipmesh-gateway"]
    secrets = {"gateway-token": "g", "service-token": "t",
               "database-url": "postgresql://sipmesh@db/sipmesh", "rabbitmq-url": "amqp://r/"}
    pods = [f"sipmesh-gateway-5d8f7c-{tail}" for tail in ("x2v9q", "k7m4p")]
    envs = {pod: pod_env(gateway, pod, secrets) for pod in pods}
    assert gateway_queue_problems(envs) == []
    own = {pod: dict(env, SIPMESH_EVENTS_CONSUMER_QUEUE=f"sipmesh.events.gateway.{pod}")
           for pod, env in envs.items()}
    assert gateway_queue_problems(own) != []
