"""Address permissions as an operator uses them (issue 21): the edge trusts the sources
of SipMesh's ``address`` table (OpenSIPS ``permissions``), edited with ``sipmesh address``
and reloaded with opensips-cli's ``address_reload`` through the gateway; sipp calls from
127.0.0.1 are refused while it is not listed, relayed once it is, refused again once it
is removed. ``[edge] trusted`` is empty here, so only the table trusts anything."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from tests.integration.operator.harness import OperatorMesh, start
from tests.support.ports import reserve_port

pytestmark = pytest.mark.peers
REFUSED = re.compile(r"received 'SIP/2.0 (403 Relaying Denied|503 Registrar Unavailable)")


@pytest.fixture(scope="module")
def om(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OperatorMesh]:
    m = start(tmp_path_factory.mktemp("permissions"))
    yield m
    assert m.mesh.stop() == 0
    assert "Traceback" not in (m.tmp / "mesh.stderr").read_text()


def _destinations(answer: dict[str, list[dict[str, object]]]) -> list[dict[str, object]]:
    [partition] = answer["Partitions"]
    assert partition["name"] == "default"
    dests = partition["Destinations"]
    assert isinstance(dests, list)
    return dests


def test_sipp_is_relayed_only_while_the_address_table_lists_it(om: OperatorMesh) -> None:
    uas_port = reserve_port()
    uas = om.uas(uas_port)
    target = f"127.0.0.1:{uas_port}"
    try:
        assert _destinations(om.cli("address_dump")) == []
        refused = om.call(target)
        assert refused.returncode != 0, "an untrusted source was relayed"
        # Refused by the edge itself: a relay for an untrusted source (503 here: the mesh
        # expects a registrar to authenticate against and none is running).
        assert REFUSED.search(refused.stdout), refused.stdout[-2000:]

        added = om.sipmesh("address", "add", "127.0.0.1", "--context-info", "lab")
        assert added.returncode == 0, added.stderr
        assert om.sipmesh("address", "add", "10.0.0.0/8", "--grp", "2").returncode == 0
        assert om.cli("address_reload") == "OK"
        assert _destinations(om.cli("address_dump")) == [
            {"grp": 1, "ip": "127.0.0.1", "mask": "32", "port": 0, "proto": "any",
             "pattern": "", "context_info": "lab"}]
        assert [(d["ip"], d["mask"], d["grp"]) for d in _destinations(om.cli("subnet_dump"))] \
            == [("10.0.0.0", "255.0.0.0", 2)]
        assert om.cli("check_addr", "1", "127.0.0.1", "5060", "udp") == {
            "match": True, "grp": 1, "ip": "127.0.0.1", "mask": 32, "port": 0, "proto": "any",
            "context_info": "lab"}
        assert om.cli("check_addr", "2", "127.0.0.1", "5060", "udp") == {"match": False}
        assert om.cli("check_addr", "0", "10.20.30.40", "0", "any")["grp"] == 2

        relayed = om.call(target, calls=3)
        assert relayed.returncode == 0, relayed.stdout[-2000:]

        removed = om.sipmesh("address", "rm", "127.0.0.1")
        assert removed.returncode == 0, removed.stderr
        assert om.cli("address_reload") == "OK"
        again = om.call(target)
        assert again.returncode != 0 and REFUSED.search(again.stdout), again.stdout[-2000:]
    finally:
        uas.terminate()
        uas.wait(10)


def test_cli_and_mi_refuse_bad_input_clearly(om: OperatorMesh) -> None:
    bad = om.sipmesh("address", "add", "not-an-ip")
    assert bad.returncode == 2 and "not an IP address" in bad.stderr
    missing = om.sipmesh("address", "rm", "192.0.2.99")
    assert missing.returncode == 1 and "no address" in missing.stderr
    listed = om.sipmesh("address", "list", "--json")
    assert listed.returncode == 0
    assert "Bad port" in om.cli_error("check_addr", "1", "127.0.0.1", "port", "udp")
    assert "Invalid params" in om.cli_error("check_addr", "1")
    # The statistics of the loaded table, per edge.
    stats = om.cli("get_statistics", "permissions:")
    assert "permissions:reloads" in stats


def test_a_table_that_cannot_be_read_keeps_the_loaded_copy(om: OperatorMesh) -> None:
    before = om.cli("address_dump")
    om.store.rename(om.store.with_suffix(".moved"))
    om.store.mkdir()  # a directory where the SQLite file was: unreadable as a table
    try:
        assert "Address table reload failed" in om.cli_error("address_reload")
        assert om.cli("address_dump") == before
    finally:
        om.store.rmdir()
        om.store.with_suffix(".moved").rename(om.store)
    assert om.cli("address_reload") == "OK"
