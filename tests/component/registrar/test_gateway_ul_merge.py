"""`ul_dump` / `ul_show_contact` through the real gateway over HTTP, answered by real
registrar MI (real `UserLocation`) on several runtimes registered in a real registry.

Two nodes with tables of their own (cluster mode `none`) dump as one table; two runtimes
over one table (what the sharing modes amount to) list each contact once; a contact two
nodes see at different CSeqs (replication in flight) is shown once, in its newer state;
`node_id` asks one node. Every answer is validated against its contracts/mi schema.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from services.registrar.location import Location, Origin
from services.registrar.mi import register_mi
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.discovery import DiscoveryConfig
from shared.rpc import RpcError
from shared.service import ServiceRuntime
from shared.sip import parse_message
from tests.component.spine.helpers import running_mesh, service, started

MI = Path(__file__).resolve().parents[3] / "contracts" / "mi"
T0 = 1_800_000_000.0


def register(user: str, contact: str, cseq: int = 1, callid: str = "c1") -> Any:
    return parse_message((
        "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK1\r\n"
        f"From: <sip:{user}@example.com>;tag=1\r\nTo: <sip:{user}@example.com>\r\n"
        f"Call-ID: {callid}\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\n"
        f"Contact: <{contact}>\r\nExpires: 600\r\nContent-Length: 0\r\n\r\n").encode())


def save(ul: UserLocation, user: str, contact: str, cseq: int = 1,
         callid: str = "c1") -> None:
    result = ul.save(register(user, contact, cseq, callid), Origin("10.0.0.5", 5060, "udp"))
    assert result.status == 200, result.reason


def node(discovery: DiscoveryConfig, ul: UserLocation, node_id: int) -> ServiceRuntime:
    rt = service("registrar", discovery)
    rt.instance_id = f"registrar-{node_id}"  # one process hosts them all: distinct ids
    rt.meta.update({"cluster_id": "1", "cluster_node_id": str(node_id)})
    register_mi(rt, ul)
    return rt


@contextlib.asynccontextmanager
async def tables(tmp_path: Path, count: int) -> AsyncIterator[list[UserLocation]]:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    try:
        yield [UserLocation(Location(), store, clock=lambda: T0) for _ in range(count)]
    finally:
        await store.close()


async def call(client: Any, method: str, params: Any = None) -> Any:
    answer = await client.call(method, params)
    schema = json.loads((MI / f"{method}.json").read_text())
    jsonschema.validate(answer, schema["result"])
    return answer


def dumped(answer: dict[str, Any]) -> dict[str, list[tuple[str, str, int]]]:
    [domain] = answer["Domains"]
    assert domain["name"] == "location"
    return {a["AOR"]: sorted((c["Contact"], c["Callid"], c["Cseq"])
                             for c in a.get("Contacts", [])) for a in domain["AORs"]}


async def test_nodes_with_own_tables_dump_as_one_and_node_id_asks_one(
        tmp_path: Path) -> None:
    async with running_mesh() as mesh, tables(tmp_path, 2) as (one, two):
        save(one, "alice", "sip:alice@10.0.0.1")
        save(two, "bob", "sip:bob@10.0.0.2")
        # carol is on both nodes: one contact both know, one each.
        save(one, "carol", "sip:carol@10.0.0.3")
        save(two, "carol", "sip:carol@10.0.0.3")
        save(two, "carol", "sip:carol@10.0.0.4", callid="c2")
        async with started(node(mesh.discovery, one, 1)), \
                started(node(mesh.discovery, two, 2)):
            c = mesh.client
            assert dumped(await call(c, "ul_dump")) == {
                "alice@example.com": [("sip:alice@10.0.0.1", "c1", 1)],
                "bob@example.com": [("sip:bob@10.0.0.2", "c1", 1)],
                "carol@example.com": [("sip:carol@10.0.0.3", "c1", 1),
                                      ("sip:carol@10.0.0.4", "c2", 1)]}
            brief = await call(c, "ul_dump", ["brief"])
            assert sorted(a["AOR"] for a in brief["Domains"][0]["AORs"]) == [
                "alice@example.com", "bob@example.com", "carol@example.com"]
            assert all("Contacts" not in a for a in brief["Domains"][0]["AORs"])
            # node_id: that node's table alone.
            assert set(dumped(await call(c, "ul_dump", {"node_id": 1}))) == {
                "alice@example.com", "carol@example.com"}
            assert set(dumped(await call(c, "ul_dump", {"brief": 1, "node_id": 2}))) == {
                "bob@example.com", "carol@example.com"}
            # ul_show_contact: from whichever node holds the AOR, contacts united.
            shown = await call(c, "ul_show_contact", ["location", "bob@example.com"])
            assert [x["Contact"] for x in shown["Contacts"]] == ["sip:bob@10.0.0.2"]
            shown = await call(c, "ul_show_contact", {"table_name": "location",
                                                      "aor": "carol@example.com"})
            assert sorted(x["Contact"] for x in shown["Contacts"]) == [
                "sip:carol@10.0.0.3", "sip:carol@10.0.0.4"]
            with pytest.raises(RpcError) as err:
                await c.call("ul_show_contact", {"table_name": "location",
                                                 "aor": "alice@example.com", "node_id": 2})
            assert (err.value.code, err.value.message) == (404, "AOR not found")
            for params, code, message in (
                    (["location", "nobody@example.com"], 404, "AOR not found"),
                    (["elsewhere", "bob@example.com"], 404, "Table not found"),
                    (["location", "bob"], 400, "Domain missing in AOR")):
                with pytest.raises(RpcError) as err:
                    await c.call("ul_show_contact", params)
                assert (err.value.code, err.value.message) == (code, message)


async def test_nodes_sharing_one_table_list_each_contact_once(tmp_path: Path) -> None:
    async with running_mesh() as mesh, tables(tmp_path, 1) as (shared,):
        save(shared, "alice", "sip:alice@10.0.0.1")
        save(shared, "alice", "sip:alice@10.0.0.9", callid="c9")
        async with started(node(mesh.discovery, shared, 1)), \
                started(node(mesh.discovery, shared, 2)), \
                started(node(mesh.discovery, shared, 3)):
            assert dumped(await call(mesh.client, "ul_dump")) == {"alice@example.com": [
                ("sip:alice@10.0.0.1", "c1", 1), ("sip:alice@10.0.0.9", "c9", 1)]}
            shown = await call(mesh.client, "ul_show_contact", ["location",
                                                                "alice@example.com"])
            assert len(shown["Contacts"]) == 2


async def test_a_contact_seen_at_two_cseqs_is_shown_once_in_its_newer_state(
        tmp_path: Path) -> None:
    async with running_mesh() as mesh, tables(tmp_path, 2) as (behind, ahead):
        save(behind, "alice", "sip:alice@10.0.0.1", cseq=1)
        save(ahead, "alice", "sip:alice@10.0.0.1", cseq=1)
        save(ahead, "alice", "sip:alice@10.0.0.1", cseq=2)  # not yet replicated
        async with started(node(mesh.discovery, behind, 1)), \
                started(node(mesh.discovery, ahead, 2)):
            assert dumped(await call(mesh.client, "ul_dump")) == {
                "alice@example.com": [("sip:alice@10.0.0.1", "c1", 2)]}


def test_merge_keeps_what_it_does_not_understand_and_declines_other_shapes() -> None:
    from gateway.merging import merge_ul_dump, merge_ul_show_contact, unite_contacts

    # Another service's command of the same name: the router merges it generically.
    assert merge_ul_dump([{"Contacts": ["a"]}, {"Domains": []}]) is None
    assert merge_ul_show_contact([{"AOR": "a@x", "Contacts": []}, ["odd"]]) is None
    # Inside a table: an AOR entry or contact without the expected keys is kept as is.
    one = {"Domains": [{"name": "location", "hash_size": 512, "AORs": [
        {"AOR": "a@x", "Contacts": [{"Contact": "sip:a@h", "Callid": "c", "Cseq": 1,
                                     "Expires": 30}, {"Contact": "sip:nocallid@h"}]},
        {"weird": True}]}]}
    two = {"Domains": [{"name": "location", "hash_size": 512, "AORs": [
        {"AOR": "a@x", "Contacts": [{"Contact": "sip:a@h", "Callid": "c", "Cseq": 1,
                                     "Expires": "permanent"}]}]}]}
    [domain] = merge_ul_dump([one, two])["Domains"]
    assert domain["AORs"] == [
        {"AOR": "a@x", "Contacts": [{"Contact": "sip:a@h", "Callid": "c", "Cseq": 1,
                                     "Expires": "permanent"}, {"Contact": "sip:nocallid@h"}]},
        {"weird": True}]
    # Same CSeq: the later expiry wins; an expired view loses to a live one.
    seen = unite_contacts([[{"Contact": "u", "Callid": "c", "Cseq": 2, "Expires": 10}],
                           [{"Contact": "u", "Callid": "c", "Cseq": 2, "Expires": "expired"}],
                           [{"Contact": "u", "Callid": "c", "Cseq": 2, "Expires": 50}]])
    assert seen == [{"Contact": "u", "Callid": "c", "Cseq": 2, "Expires": 50}]
