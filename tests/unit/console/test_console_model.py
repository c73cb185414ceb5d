"""The web console's model (sans-IO): what the page shows from MI answers and events."""

from __future__ import annotations

from typing import Any

from gateway.console.model import ConsoleModel, InstanceInfo, Poll


def inst(service: str, ident: str, *, node: int | None = None, cluster: int = 1,
         passing: bool = True, started: int = 1000) -> InstanceInfo:
    meta = {"pid": str(100 + len(ident)), "version": "0.1.0", "started": str(started)}
    if node is not None:
        meta.update(cluster_id=str(cluster), cluster_node_id=str(node))
    return InstanceInfo(service, ident, "127.0.0.1", 7000, passing, meta)


def clusterer_list(*views: tuple[int, int, dict[int, tuple[str, str]]]) -> dict[str, Any]:
    """``(cluster, answering node, {peer: (link_state, next_hop)})`` views, as the
    gateway concatenates them."""
    return {"Clusters": [{"cluster_id": c, "local_node_id": me, "Nodes": [
        {"node_id": peer, "db_id": peer, "url": "", "link_state": state, "next_hop": hop,
         "description": f"node {peer}"} for peer, (state, hop) in peers.items()]}
        for c, me, peers in views]}


def two_registrars(**kw: Any) -> Poll:
    gw, r1, r2 = inst("gateway", "gw"), inst("registrar", "r1", node=1), \
        inst("registrar", "r2", node=2)
    stats = {0: {"load:load-all": 5, "load:load1m-all": 4, "load:load10m-all": 3},
             1: {"load:load-all": 10, "load:load1m-all": 8, "load:load10m-all": 6,
                 "usrloc:registered_users": 3, "registrar:accepted_regs": 10},
             2: {"load:load-all": 20, "load:load1m-all": 15, "load:load10m-all": 12,
                 "usrloc:registered_users": 3, "registrar:accepted_regs": 4}}
    stats.update(kw.pop("stats", {}))
    return Poll(instances=kw.pop("instances", [gw, r1, r2]),
                ps_ids={"gw": 0, "r1": 1, "r2": 2}, stats=stats, **kw)


def test_services_list_every_instance_with_health_version_and_uptime() -> None:
    poll = two_registrars(instances=[inst("gateway", "gw"), inst("registrar", "r1", node=1),
                                     inst("registrar", "r2", node=2, passing=False),
                                     inst("supervisor", "sup")])
    view = ConsoleModel().update(poll, now=1060)
    assert [s["name"] for s in view["services"]] == ["gateway", "registrar"]
    regs = view["services"][1]["instances"]
    assert [(i["id"], i["health"], i["node"], i["ps_id"]) for i in regs] == [
        ("r1", "passing", 1, 1), ("r2", "critical", 2, 2)]
    assert regs[0]["uptime"] == 60 and regs[0]["version"] == "0.1.0"


def test_links_as_each_answering_node_sees_them_and_a_dead_node_stays() -> None:
    up = clusterer_list((1, 1, {2: ("Up", "2"), 3: ("Up", "3")}),
                        (1, 2, {1: ("Up", "1"), 3: ("Up", "3")}))
    model = ConsoleModel()
    view = model.update(two_registrars(clusters=up), now=1)
    [cluster] = view["clusters"]
    assert cluster["service"] == "registrar"
    assert [(n["id"], n["answering"]) for n in cluster["nodes"]] == [
        (1, True), (2, True), (3, False)]
    # Node 2 killed: only node 1 answers; its link to 2 goes Down (no path: no relay).
    down = clusterer_list((1, 1, {2: ("Down", "none"), 3: ("Probe", "3")}))
    [cluster] = model.update(two_registrars(clusters=down), now=2)["clusters"]
    assert {(x["from"], x["to"]): (x["state"], x["via"]) for x in cluster["links"]} == {
        (1, 2): ("Down", None), (1, 3): ("Probe", None)}
    # Node 2 still appears (its peers and discovery know it), as not answering.
    assert [(n["id"], n["answering"]) for n in cluster["nodes"]] == [
        (1, True), (2, False), (3, False)]


def test_a_relayed_link_names_the_node_it_goes_through() -> None:
    poll = two_registrars(clusters=clusterer_list((1, 1, {2: ("Up", "2"), 3: ("Down", "2")})))
    [cluster] = ConsoleModel().update(poll, now=1)["clusters"]
    assert {x["to"]: x["via"] for x in cluster["links"]} == {2: None, 3: 2}


def test_sharing_tags_name_their_holder_and_backups() -> None:
    shtags = [{"Tag": "vip", "Cluster": 1, "State": "backup", "Node": 1},
              {"Tag": "vip", "Cluster": 1, "State": "active", "Node": 2},
              {"Tag": "db", "Cluster": 1, "State": "backup", "Node": 2}]
    poll = two_registrars(clusters=clusterer_list((1, 2, {1: ("Up", "1")})), shtags=shtags)
    [cluster] = ConsoleModel().update(poll, now=1)["clusters"]
    assert cluster["tags"] == [
        {"tag": "db/1", "holders": [], "backups": [2]},
        {"tag": "vip/1", "holders": [2], "backups": [1]}]


def test_load_series_per_process_grow_and_forget_a_process_that_left() -> None:
    model = ConsoleModel(history=3)
    for t in range(5):
        view = model.update(two_registrars(), now=t)
    loads = {p["name"]: p for p in view["load"]}
    assert set(loads) == {"gateway", "registrar node 1", "registrar node 2"}
    assert loads["registrar node 2"]["load"] == 20 and loads["registrar node 2"]["load10m"] == 12
    assert loads["gateway"]["series"] == [[2, 5, 4, 3], [3, 5, 4, 3], [4, 5, 4, 3]]
    gone = two_registrars(instances=[inst("gateway", "gw"), inst("registrar", "r1", node=1)])
    assert [p["name"] for p in model.update(gone, now=5)["load"]] == [
        "gateway", "registrar node 1"]
    assert "r2" not in model._load


def test_users_of_a_cluster_count_once_and_unclustered_tables_add_up() -> None:
    view = ConsoleModel().update(two_registrars(), now=1)
    assert view["registrations"]["users"] == 3  # the two nodes share one table
    assert [p["users"] for p in view["registrations"]["per_instance"]] == [3, 3]
    alone = [inst("registrar", "r1"), inst("registrar", "r2")]  # cluster mode none
    view = ConsoleModel().update(two_registrars(instances=alone), now=1)
    assert view["registrations"]["users"] == 6


def test_registration_rate_is_the_counter_growth_per_second_and_survives_a_reset() -> None:
    model = ConsoleModel()
    model.update(two_registrars(), now=10)  # 14 accepted so far
    grown = two_registrars(stats={1: {"registrar:accepted_regs": 30,
                                      "usrloc:registered_users": 5}})
    assert model.update(grown, now=12)["registrations"]["rate"] == 10.0  # (34-14)/2
    reset = two_registrars(stats={1: {"registrar:accepted_regs": 0},
                                  2: {"registrar:accepted_regs": 2}})
    assert model.update(reset, now=13)["registrations"]["rate"] == 2.0  # from zero


def test_dialogs_appear_only_with_a_dialog_service_that_counts() -> None:
    model = ConsoleModel()
    assert model.update(two_registrars(), now=1)["dialogs"] is None
    dlg = inst("dialog", "d1")
    silent = two_registrars(instances=[inst("gateway", "gw"), dlg])
    silent = Poll(silent.instances, {"gw": 0, "d1": 1}, {0: {}, 1: {"load:load-all": 1}})
    assert model.update(silent, now=2)["dialogs"] is None
    counting = Poll(silent.instances, {"gw": 0, "d1": 1},
                    {0: {}, 1: {"dialog:active_dialogs": 7}})
    assert model.update(counting, now=3)["dialogs"] == {"active": 7.0, "series": [[3, 7.0]]}


def test_events_per_second_by_name_over_the_window() -> None:
    model = ConsoleModel(rate_window=10)
    for i in range(30):
        model.on_event("E_UL_CONTACT_INSERT", {}, now=100 + i / 10)  # 30 in 3 s
    model.on_event("E_CORE_THRESHOLD", {"source": "mi command", "time": 9, "extra": "x"},
                   now=101, service="edge", raised=100.5)
    assert model.event_rates(105) == [{"name": "E_UL_CONTACT_INSERT", "per_second": 3.0},
                                      {"name": "E_CORE_THRESHOLD", "per_second": 0.1}]
    assert model.event_rates(112) == []  # out of the window: forgotten
    assert model._buckets == {}


def test_recent_keeps_thresholds_and_failovers_newest_first_bounded() -> None:
    model = ConsoleModel(recent=2)
    model.on_event("E_UL_AOR_INSERT", {"aor": "a"}, now=1)
    model.on_event("E_CLUSTERER_NODE_STATE_CHANGED",
                   {"cluster_id": 1, "node_id": 2, "new_state": 0}, now=2, node="r1")
    model.on_event("E_CORE_THRESHOLD", {"source": "msg processing"}, now=3)
    model.on_event("E_CLUSTERER_SHARING_TAG_CHANGED", {"name": "vip"}, now=4)
    view = model.update(two_registrars(), now=5)
    assert [e["name"] for e in view["events"]["recent"]] == [
        "E_CLUSTERER_SHARING_TAG_CHANGED", "E_CORE_THRESHOLD"]
