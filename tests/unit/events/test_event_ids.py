"""events_list ids are written in the contracts (x-sipmesh-id) and never change."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from gateway.events.mi import events_list, subscribers_list
from gateway.events.store import SQLiteSubscriptionStore
from gateway.events.subscriptions import SubscriptionManager
from shared.events.schema import EventCatalog, default_contracts_dir

# Released ids: a consumer may have stored them. Append new events here; never edit a line.
RELEASED = {
    "E_ACC_CDR": 0, "E_ACC_MISSED_EVENT": 1, "E_CLUSTERER_NODE_STATE_CHANGED": 2,
    "E_CLUSTERER_SHARING_TAG_CHANGED": 3, "E_CORE_PKG_THRESHOLD": 4,
    "E_CORE_SHM_THRESHOLD": 5, "E_CORE_THRESHOLD": 6, "E_CORE_TM_REPLICATION_FAILED": 7,
    "E_DISPATCHER_STATUS": 8, "E_DLG_STATE_CHANGED": 9, "E_FREESWITCH": 10,
    "E_PIKE_BLOCKED": 11, "E_PRESENCE_EXPOSED": 12, "E_PRESENCE_PUBLISH": 13,
    "E_RTPENGINE_STATUS": 14, "E_SIPREC_FAILED": 15, "E_SIPREC_START": 16,
    "E_SIPREC_STOP": 17, "E_UL_AOR_DELETE": 18, "E_UL_AOR_INSERT": 19,
    "E_UL_CONTACT_DELETE": 20, "E_UL_CONTACT_INSERT": 21, "E_UL_CONTACT_REFRESH": 22,
    "E_UL_CONTACT_UPDATE": 23, "E_UL_LATENCY_UPDATE": 24,
}


def test_released_ids_never_change_and_every_event_has_its_own() -> None:
    catalog = EventCatalog.load()
    for name, released in RELEASED.items():
        assert catalog.event_id(name) == released, name
    ids = [catalog.event_id(n) for n in catalog.names()]
    assert len(set(ids)) == len(ids)
    # an event added since is listed above (released) or took an id after them all
    for name in catalog.names():
        assert name in RELEASED or catalog.event_id(name) > max(RELEASED.values()), name


def _copy_contracts(tmp: Path) -> Path:
    out = tmp / "events"
    shutil.copytree(default_contracts_dir(), out)
    return out


def _add_event(directory: Path, name: str, event_id: int) -> None:
    schema = json.loads((directory / "E_UL_AOR_INSERT.json").read_text())
    schema.update({"$id": f"sipmesh:events/{name}", "title": name, "x-sipmesh-id": event_id})
    (directory / f"{name}.json").write_text(json.dumps(schema))


async def test_an_event_added_in_the_middle_shifts_no_id(tmp_path: Path) -> None:
    directory = _copy_contracts(tmp_path)
    _add_event(directory, "E_AAA_FIRST", 1000)  # sorts before every released event
    manager = SubscriptionManager(EventCatalog.load(directory),
                                  SQLiteSubscriptionStore(tmp_path / "s.db"))
    listed = {e["name"]: e["id"] for e in (await events_list(manager))["Events"]}
    assert listed == {**RELEASED, "E_AAA_FIRST": 1000}
    assert (await subscribers_list(manager, "E_UL_AOR_INSERT"))["id"] == 19
    # the OpenSIPS shape: a list of {"name", "id"}, ordered by name
    assert [e["name"] for e in (await events_list(manager))["Events"]] == sorted(listed)


@pytest.mark.parametrize("bad", [None, -1, "3", True])
def test_a_contract_without_a_valid_id_is_refused(tmp_path: Path, bad: object) -> None:
    directory = _copy_contracts(tmp_path)
    path = directory / "E_ACC_CDR.json"
    schema = json.loads(path.read_text())
    if bad is None:
        del schema["x-sipmesh-id"]
    else:
        schema["x-sipmesh-id"] = bad
    path.write_text(json.dumps(schema))
    with pytest.raises(ValueError, match="x-sipmesh-id"):
        EventCatalog.load(directory)


def test_two_contracts_with_one_id_are_refused(tmp_path: Path) -> None:
    directory = _copy_contracts(tmp_path)
    _add_event(directory, "E_ZZZ_CLASH", 19)
    with pytest.raises(ValueError, match="x-sipmesh-id 19"):
        EventCatalog.load(directory)
