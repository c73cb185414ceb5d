"""The Kubernetes manifests in deploy/k8s stay valid and in step with the code (issue 20).

Kubernetes cannot run here, so the manifests are checked offline: the base and the
production overlay are rendered by :func:`render` (the subset of kustomize they use:
resources, namespace, labels, images, replicas and strategic-merge patches), and when
``kubectl`` is on the PATH its own ``kubectl kustomize`` must render the same objects.
Every object is validated against the Kubernetes OpenAPI schemas by kubernetes-validate
(PyPI), strictly (an unknown field fails), and the Deployments are checked against the
catalog and the services' configuration classes.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from sipmesh.catalog import SERVICES
from tests.unit.test_compose import SECTIONS

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
KUBE_VERSION = "1.32"  # the oldest Kubernetes the manifests are promised to work on
Obj = dict[str, Any]


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
        if obj["kind"] == "Deployment":
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
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == "Deployment"}


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
    one pod at a time on a rolling update (a new one ready before an old one goes), and the
    termination bound leaves the service's drain room after the preStop pause."""
    from shared.service.runtime import RuntimeConfig

    for name, dep in _deployments(rendered).items():
        spec = dep["spec"]
        assert spec["strategy"]["rollingUpdate"] == {"maxUnavailable": 0, "maxSurge": 1}
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
            if not var.startswith("SIPMESH_"):
                continue
            section, _, field = var.removeprefix("SIPMESH_").partition("_")
            cls = SECTIONS.get(section)
            assert cls is not None, f"{name}: {var}: unknown section {section}"
            fields = {f.name.upper() for f in dataclasses.fields(cls)}
            assert field in fields, f"{name}: {var}: {cls.__name__} has no field {field.lower()}"
    # The README tells the operator to create exactly these keys.
    readme = (ROOT / "README.md").read_text()
    for key in secrets_used:
        assert f"--from-literal={key}=" in readme, f"README does not name secret key {key}"
