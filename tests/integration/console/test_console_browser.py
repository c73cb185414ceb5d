"""The web console in a real headless Chromium, against `sipmesh up --nodes 2`.

The mesh: the gateway and a 2-node full-sharing registrar cluster holding sharing tag
vip/1, JSON logs for every process. The page must load with no console error and go live
(server-sent events); a binding added through MI shows on screen, counted once for the
cluster; kill -9 of the node holding the tag turns its link Down on screen and moves the
tag to the survivor within the failover time, the E_CLUSTERER events listed; a screenshot
of each state is written under the test's temporary directory (path printed).

The same mesh checks the rest of the observability slice: every process's /metrics (the
supervisor's included) has no doubled word and no family twice, with the MI and gRPC
latency histograms; `log_level` through the gateway changes one process's level, seen in
its JSON log lines.
"""

from __future__ import annotations

import json
import os
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.service.version import MESH_VERSION
from tests.integration.spine.meshproc import MeshProcess
from tests.support.browser import (
    attribute_of,
    chromium,
    console_errors,
    count,
    text_of,
    texts,
)
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(170)
TIMERS = {"PING_INTERVAL": "0.5", "PING_TIMEOUT": "0.3", "PING_RETRIES": "3",
          "SEED_FALLBACK_INTERVAL": "1"}
# A peer is declared Down after ping_retries pings unanswered (each within ping_timeout,
# one every ping_interval), then a backup takes the tag; the page learns it at its next
# poll (1 s). The margin is for a shared 2-core machine.
FAILOVER = 0.5 * 3 + 0.3
ON_SCREEN_BOUND = FAILOVER + 1.0 + 5.0


def mi(url: str, method: str, params: Any = None) -> Any:
    body: dict[str, Any] = {"jsonrpc": "2.0", "id": 1, "method": method}
    if params is not None:
        body["params"] = params
    req = urllib.request.Request(url, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        answer = json.loads(resp.read())
    assert "result" in answer, answer
    return answer["result"]


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MeshProcess]:
    tmp = tmp_path_factory.mktemp("console-mesh")
    env = {"SIPMESH_MESH_SERVICES": "gateway,registrar", "SIPMESH_MESH_NODES": "2",
           # The killed node stays down while the page is watched.
           "SIPMESH_MESH_BACKOFF_INITIAL": "60",
           "SIPMESH_REGISTRAR_CLUSTER_SHARING_TAGS": "vip/1=backup",
           "SIPMESH_REGISTRAR_STORE": str(tmp / "subscribers.sqlite"),
           "SIPMESH_LOG_FORMAT": "json"}
    env.update({f"SIPMESH_REGISTRAR_CLUSTER_{k}": v for k, v in TIMERS.items()})
    m = MeshProcess(tmp, **env)
    yield m
    m.stop()


@pytest.fixture(scope="module")
def base(mesh: MeshProcess) -> str:
    return mesh.gateway_url.rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


def shot(driver: Any, tmp_path: Path, name: str) -> Path:
    path = tmp_path / f"{name}.png"
    assert driver.save_screenshot(str(path)), "screenshot not written"
    assert path.stat().st_size > 10_000
    print(f"screenshot: {path}")
    return path


def link_state(driver: Any, src: int, dst: int) -> str | None:
    return attribute_of(driver, f'td.link[data-cluster="1"][data-from="{src}"]'
                                f'[data-to="{dst}"]', "data-state")


def holder(driver: Any) -> str | None:
    return attribute_of(driver, '.cluster[data-cluster="1"] li[data-tag="vip/1"]',
                        "data-holder")


def test_page_loads_live_with_no_console_error(
        mesh: MeshProcess, base: str, browser: Any, tmp_path: Path) -> None:
    browser.get(base + "/")
    eventually_sync(lambda: text_of(browser, "#status") == "live", 20, "the stream live")
    # Every process of the mesh, each with health and version.
    eventually_sync(lambda: count(browser, "#services-body tr") == 3, 30,
                    "gateway and two registrar nodes listed")
    rows = texts(browser, "#services-body tr")
    assert sum(r.startswith("registrar node") for r in rows) == 2
    assert all("passing" in r and MESH_VERSION in r for r in rows)
    # Both links Up as each node sees them, one holder of vip/1, a load plot per process.
    eventually_sync(lambda: link_state(browser, 1, 2) == "Up" and link_state(browser, 2, 1)
                    == "Up", 30, "registrar links Up on screen")
    eventually_sync(lambda: (holder(browser) or "") in ("1", "2"), 30, "one vip/1 holder")
    eventually_sync(lambda: count(browser, "[data-plot^='load-'] polyline") == 9, 10,
                    "three load lines for each of the three processes")
    assert browser.find_element("id", "dialogs").get_attribute("hidden") is not None
    assert console_errors(browser) == []
    shot(browser, tmp_path, "console-live")


def test_a_binding_shows_counted_once_for_the_cluster(
        mesh: MeshProcess, base: str, browser: Any) -> None:
    assert mi(mesh.gateway_url, "ul_add", ["location", "alice@example.com",
                                           "sip:alice@127.0.0.1:5099", 600, 1, 0, 0, 0]) == "OK"
    def shown() -> tuple[str | None, list[str]]:
        return text_of(browser, "#reg-users"), texts(browser, "#reg-nodes li")

    eventually_sync(lambda: shown() == ("1", ["node 1: 1", "node 2: 1"]),
                    20, "one user on screen, replicated to both nodes")
    assert console_errors(browser) == []


def test_killing_the_tag_holder_turns_its_link_down_and_moves_the_tag(
        mesh: MeshProcess, base: str, browser: Any, tmp_path: Path) -> None:
    node = int(eventually_sync(lambda: holder(browser) if holder(browser) in ("1", "2")
                               else None, 30, "one vip/1 holder"))
    other = 3 - node
    eventually_sync(lambda: link_state(browser, other, node) == "Up", 30, "link Up first")
    [pid] = [p["PID"] for p in mi(mesh.gateway_url, "ps")["Processes"]
             if p["Type"].endswith(f"cluster 1 node {node}")]
    os.kill(pid, signal.SIGKILL)
    killed = time.monotonic()
    eventually_sync(lambda: link_state(browser, other, node) == "Down", ON_SCREEN_BOUND,
                    f"node {other} showing its link to node {node} Down")
    down = time.monotonic() - killed
    eventually_sync(lambda: holder(browser) == str(other), ON_SCREEN_BOUND,
                    f"vip/1 moved to node {other} on screen")
    moved = time.monotonic() - killed
    eventually_sync(lambda: attribute_of(browser, f'.cluster[data-cluster="1"] '
                                                  f'li[data-node="{node}"]',
                                         "data-answering") == "no", 10,
                    "the dead node marked as not answering")
    # The failover events are listed (raised by the survivor, fed to the gateway).
    eventually_sync(lambda: count(
        browser, '#recent-body li[data-event="E_CLUSTERER_NODE_STATE_CHANGED"]') >= 1
        and count(browser, '#recent-body li[data-event="E_CLUSTERER_SHARING_TAG_CHANGED"]')
        >= 1, 10, "E_CLUSTERER_* events listed")
    eventually_sync(lambda: count(browser, '#event-rates [data-event^="E_CLUSTERER_"]') >= 1,
                    10, "clusterer events per second")
    assert console_errors(browser) == []
    shot(browser, tmp_path, "console-failover")
    print(f"on screen after kill -9: link Down {down:.2f}s, tag moved {moved:.2f}s "
          f"(bound {ON_SCREEN_BOUND:.1f}s)")


def _metrics_urls(mesh: MeshProcess) -> list[str]:
    with urllib.request.urlopen(mesh.registry_url + "/v1/instances", timeout=10) as resp:
        instances = json.loads(resp.read())
    if isinstance(instances, dict):
        instances = instances.get("instances", [])
    return sorted({i["meta"]["metrics_url"] for i in instances
                   if i.get("meta", {}).get("metrics_url")})


DOUBLED = re.compile(r"(?:^|_)([a-z0-9]+)_\1(?:_|$)")


def test_every_metric_name_is_free_of_doubled_words_and_unique(mesh: MeshProcess) -> None:
    urls = _metrics_urls(mesh)
    assert any(u.startswith(mesh.registry_url) for u in urls), "supervisor /metrics"
    assert len(urls) >= 3
    names: set[str] = set()
    for url in urls:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        families = re.findall(r"^# TYPE (\S+) ", text, re.M)
        assert len(families) == len(set(families)), f"a family twice on {url}"
        names.update(families)
    doubled = sorted(n for n in names if DOUBLED.search(n))
    assert doubled == [], doubled
    assert {"sipmesh_gateway_mi_seconds", "sipmesh_grpc_server_seconds",
            "sipmesh_grpc_client_seconds", "sipmesh_supervisor_child_up", "sipmesh_load_all",
            "sipmesh_pkmem_real_used_size"} <= names


def test_supervisor_health_names_its_children(mesh: MeshProcess) -> None:
    with urllib.request.urlopen(mesh.registry_url + "/health", timeout=10) as resp:
        body = json.loads(resp.read())
    assert resp.status == 200 and body["status"] == "passing"
    assert {"gateway", "registrar.1", "registrar.2"} == set(body["children"])
    assert body["children"]["gateway"]["state"] == "running"


def test_mi_latency_is_measured_per_method_at_the_gateway(mesh: MeshProcess, base: str) -> None:
    mi(mesh.gateway_url, "uptime")
    text = urllib.request.urlopen(base + "/metrics", timeout=10).read().decode()
    found = re.search(r'^sipmesh_gateway_mi_seconds_count\{method="uptime"\} (\S+)', text, re.M)
    assert found and float(found.group(1)) >= 1


def test_log_level_changes_one_running_process(mesh: MeshProcess) -> None:
    procs = mi(mesh.gateway_url, "log_level")["Processes"]
    assert {p["Log level"] for p in procs} == {3}  # info everywhere
    gateway_pid = next(p["PID"] for p in procs if p["Type"].startswith("gateway"))
    registrar = next(p for p in procs if p["Type"].startswith("registrar"))
    # A Unix PID as OpenSIPS takes it: only that process goes to debug.
    assert mi(mesh.gateway_url, "log_level", [4, registrar["PID"]]) == {
        "PID": registrar["PID"], "New log level": 4}
    levels = {p["PID"]: p["Log level"] for p in mi(mesh.gateway_url, "log_level")["Processes"]}
    assert levels[registrar["PID"]] == 4 and levels[gateway_pid] == 3
    # Seen in its JSON log: its MI requests are now logged at debug, the gateway's not.
    mi(mesh.gateway_url, "get_statistics", [["load:"]])

    def debug_lines(pid: int) -> list[dict[str, Any]]:
        text = Path(mesh.stderr.name).read_text(errors="replace")
        docs = [json.loads(line) for line in text.splitlines() if line.startswith("{")
                and '"mi_request"' in line]
        return [d for d in docs if d.get("level") == "debug" and d.get("pid") == pid]

    eventually_sync(lambda: debug_lines(registrar["PID"]), 10, "a debug line of the registrar")
    assert debug_lines(gateway_pid) == []
    assert mi(mesh.gateway_url, "log_level", {"level": "info"}) == {"New global log level": 3}
    assert {p["Log level"] for p in mi(mesh.gateway_url, "log_level")["Processes"]} == {3}
    error = json.loads(urllib.request.urlopen(urllib.request.Request(
        mesh.gateway_url, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "log_level",
                                      "params": [9]}).encode(),
        {"Content-Type": "application/json"}), timeout=10).read())["error"]
    assert error["code"] == -32602
