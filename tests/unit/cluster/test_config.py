"""ClusterConfig's node identity: a StatefulSet's replicas share one configuration and take
their node id from the pod name (``node_id_from_hostname``), and ClusterNode uses it."""

from __future__ import annotations

import pytest

from shared.cluster import ClusterConfig, ClusterNode
from shared.config import load_section

SECRET = "s3cret"


@pytest.mark.parametrize(("hostname", "base", "node_id"), [
    ("sipmesh-registrar-0", 1, 1),
    ("sipmesh-registrar-1", 1, 2),
    ("sipmesh-dialog-12.sipmesh-dialog-peers.sipmesh.svc.cluster.local", 1, 13),
    ("edge-3", 10, 13),
])
def test_the_node_id_is_the_base_plus_the_pod_ordinal(hostname: str, base: int,
                                                      node_id: int) -> None:
    config = ClusterConfig(node_id=base, node_id_from_hostname=True, secret=SECRET)
    mine = config.for_host(hostname)
    assert mine.node_id == node_id
    assert not mine.node_id_from_hostname  # resolved once: applying it again changes nothing
    assert mine.for_host("other-7") == mine
    mine.validate()


def test_without_the_setting_the_host_name_is_ignored() -> None:
    config = ClusterConfig(node_id=4, secret=SECRET)
    assert config.for_host("sipmesh-registrar-1") is config


@pytest.mark.parametrize("hostname", ["registrar", "registrar-", "registrar-x1", "node-1a.x"])
def test_a_host_name_without_an_ordinal_is_a_configuration_error(hostname: str) -> None:
    config = ClusterConfig(node_id_from_hostname=True, secret=SECRET)
    with pytest.raises(ValueError, match="does not end in -<ordinal>"):
        config.for_host(hostname)


def test_the_setting_comes_from_the_environment() -> None:
    config = load_section(ClusterConfig, "registrar.cluster", environ={
        "SIPMESH_REGISTRAR_CLUSTER_NODE_ID_FROM_HOSTNAME": "true",
        "SIPMESH_REGISTRAR_CLUSTER_SECRET": SECRET})
    assert config.for_host("sipmesh-registrar-1").node_id == 2


def test_a_cluster_node_takes_its_id_from_the_pod_name(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("socket.gethostname", lambda: "sipmesh-presence-1")
    node = ClusterNode(ClusterConfig(node_id_from_hostname=True, secret=SECRET))
    assert node.id == node.config.node_id == 2
    assert node.meta()["cluster_node_id"] == "2"  # what its twin finds in discovery
    monkeypatch.setattr("socket.gethostname", lambda: "sipmesh-presence")
    with pytest.raises(ValueError, match="ordinal"):
        ClusterNode(ClusterConfig(node_id_from_hostname=True, secret=SECRET))
