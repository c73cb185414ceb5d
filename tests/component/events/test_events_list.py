"""``events_list`` advertises what the running mesh can raise, nothing more: each service
declares its events in its registration and the gateway unites them (a real gateway, a
real registry, services registering and leaving)."""

from __future__ import annotations

import pytest

from shared.events.config import EventsConfig
from shared.rpc import JsonRpcClient
from shared.service import RuntimeConfig, ServiceRuntime
from tests.component.spine.helpers import running_mesh, started
from tests.support.waiting import eventually

UL = {"E_UL_AOR_DELETE", "E_UL_AOR_INSERT", "E_UL_CONTACT_DELETE", "E_UL_CONTACT_INSERT",
      "E_UL_CONTACT_REFRESH", "E_UL_CONTACT_UPDATE", "E_UL_LATENCY_UPDATE"}


async def listed(client: JsonRpcClient) -> dict[str, int]:
    return {e["name"]: e["id"] for e in (await client.call("events_list"))["Events"]}


async def test_events_list_is_the_union_of_what_running_services_declare() -> None:
    async with running_mesh() as mesh:
        # The gateway alone: only what every process can raise.
        assert set(await listed(mesh.client)) == {"E_CORE_THRESHOLD"}
        registrar = ServiceRuntime("registrar", config=RuntimeConfig(),
                                   discovery=mesh.discovery, events=EventsConfig())
        registrar.declare_events("usrloc.#")
        async with started(registrar):
            names = await eventually(
                lambda: _names_when(mesh.client, UL), 5, "the registrar's events listed")
            assert names == UL | {"E_CORE_THRESHOLD"}
            # Contracts no running service raises are not advertised...
            assert not names & {"E_ACC_CDR", "E_DLG_STATE_CHANGED", "E_CORE_PKG_THRESHOLD"}
            # ...but may be subscribed to (the service may start later).
            assert await mesh.client.call(
                "event_subscribe", ["E_ACC_CDR", "udp:127.0.0.1:9", 60]) == "OK"
            ids = await listed(mesh.client)
            every = registrar.events.catalog.names()
            assert all(ids[n] == every.index(n) for n in ids)  # stable ids: contract order
            subs = await mesh.client.call("subscribers_list")
            shown = {e["name"] for e in subs["Events"]}
            assert shown == names | {"E_ACC_CDR"}  # advertised, or subscribed
        # The registrar left discovery: its events are no longer advertised.
        await eventually(lambda: _names_when(mesh.client, {"E_CORE_THRESHOLD"}, exact=True),
                         5, "the registrar's events withdrawn")


async def _names_when(client: JsonRpcClient, wanted: set[str],
                      exact: bool = False) -> set[str] | None:
    names = set(await listed(client))
    ok = names == wanted if exact else wanted <= names
    return names if ok else None


def test_declaring_an_unknown_event_or_family_is_refused() -> None:
    rt = ServiceRuntime("x", events=EventsConfig())
    with pytest.raises(ValueError, match="no event family"):
        rt.declare_events("nosuch.#")
    with pytest.raises(ValueError, match="unknown event"):
        rt.declare_events("E_NOT_A_CONTRACT")
    rt.declare_events("clusterer.#", "E_ACC_CDR")
    assert {"E_CLUSTERER_NODE_STATE_CHANGED", "E_CLUSTERER_SHARING_TAG_CHANGED",
            "E_ACC_CDR", "E_CORE_THRESHOLD"} == rt.raises
