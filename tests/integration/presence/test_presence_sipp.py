"""Presence through a real `sipmesh up` in its default configuration, sipp as phones:
a watcher subscribes to bob's presence through the edge, bob publishes `open`, the watcher
gets a NOTIFY with the PIDF; un-subscribe gets the final NOTIFY; E_PRESENCE_PUBLISH and
E_PRESENCE_EXPOSED reach a UDP subscriber; every MI answer matches its schema; the
publication's and the subscription's expiry are notified; 489 for an unknown package;
kill -9 of the presence service keeps the subscription (the next PUBLISH still reaches the
watcher)."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.presence.harness import PresenceMesh, sipp_failure, wait_for

pytestmark = pytest.mark.peers
CONTRACTS = Path(__file__).resolve().parents[3] / "contracts" / "mi"
# A 200 to the initial SUBSCRIBE in a sipp message file.
ACKNOWLEDGED = re.compile(r"message received \[\d+\] bytes :\s+SIP/2\.0 200 OK"
                          r"(?:(?!-{20}).)*?CSeq: 1 SUBSCRIBE", re.S)


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresenceMesh]:
    # [presence] min_expires lowered from 10 s so the expiry test waits out 4 s and 8 s.
    m = PresenceMesh(tmp_path_factory.mktemp("presence-mesh"), SIPMESH_PRESENCE_MIN_EXPIRES="2")
    yield m
    m.stop()


@pytest.fixture(scope="module")
def events(mesh: PresenceMesh) -> Iterator[socket.socket]:
    """A UDP subscriber (event_datagram) of the presence events."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    for name in ("E_PRESENCE_PUBLISH", "E_PRESENCE_EXPOSED"):
        assert mesh.mi("event_subscribe", [name, f"udp:127.0.0.1:{port}", 600]) == "OK"
    yield sock
    sock.close()


def received(sock: socket.socket, seconds: float) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            out.append(json.loads(sock.recv(65535)))
        except TimeoutError:
            break
    return out


def checked(mesh: PresenceMesh, method: str, params: Any = None) -> Any:
    """An MI call through the gateway, params and answer validated against contracts/mi."""
    import jsonschema

    schema = json.loads((CONTRACTS / f"{method}.json").read_text())
    jsonschema.validate(params, schema["params"])
    result = mesh.mi(method, params)
    jsonschema.validate(result, schema["result"])
    return result


def test_a_watcher_gets_the_pidf_bob_publishes(mesh: PresenceMesh,
                                               events: socket.socket) -> None:
    watcher = mesh.sipp_run("watcher.xml", "bob", background=True)
    (sub,) = wait_for(lambda: mesh.subscriptions("bob@127.0.0.1"), 20,
                      "the watcher's subscription in subs_phtable_list")
    assert sub["event"] == "presence" and sub["status"] == "active"
    assert 590 <= sub["expires"] <= 600 and sub["from_user"] == "watcher1"
    publisher = mesh.sipp_run("publisher.xml", "bob", keys=[("basic", "open"),
                                                           ("expires", "60")])
    assert publisher.returncode == 0, sipp_failure(mesh, publisher)
    (pub,) = mesh.publications("bob@127.0.0.1")
    assert pub["basic"] == "open" and 55 <= pub["expires"] <= 60 and pub["etag"]
    got = [e["params"] for e in received(events, 2.0) if e["method"] == "E_PRESENCE_PUBLISH"]
    assert [(e["user"], e["domain"], e["expires"], e["etag"]) for e in got] == [
        ("bob", "127.0.0.1", 60, pub["etag"])]
    assert "<basic>open</basic>" in got[0]["body"]
    # The watcher got the NOTIFY with <basic>open</basic>, then un-subscribed and got the
    # final NOTIFY (terminated): its scenario checks each step.
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)
    log = mesh.messages(watcher)
    assert "Subscription-State: terminated;reason=timeout" in log
    assert 'entity="sip:bob@127.0.0.1"' in log
    wait_for(lambda: not mesh.subscriptions("bob@127.0.0.1"), 10, "the subscription gone")


def test_every_mi_answer_matches_its_schema(mesh: PresenceMesh,
                                           events: socket.socket) -> None:
    received(events, 0.1)
    publisher = mesh.sipp_run("publisher.xml", "grace", keys=[("basic", "open"),
                                                             ("expires", "60")])
    assert publisher.returncode == 0, sipp_failure(mesh, publisher)
    watcher = mesh.sipp_run("watcher.xml", "grace", background=True)
    wait_for(lambda: mesh.subscriptions("grace@127.0.0.1"), 20, "grace's watcher")
    pubs = checked(mesh, "pres_phtable_list")["Presentities"]
    assert any(p["pres_uri"] == "sip:grace@127.0.0.1" for p in pubs)
    subs = checked(mesh, "subs_phtable_list", ["sip:watcher*", "sip:grace@*"])
    assert [s["to_user"] for s in subs["Subscriptions"]] == ["grace"]
    assert checked(mesh, "subs_phtable_list", {"from": "sip:nobody*"})["Subscriptions"] == []
    assert checked(mesh, "cleanup") == "OK"
    assert checked(mesh, "pres_expose", ["presence", "grace@"]) == "OK"
    exposed = [e["params"] for e in received(events, 2.0) if e["method"] == "E_PRESENCE_EXPOSED"]
    assert [e["user"] for e in exposed] == ["grace"]
    # refresh_watchers sends the current state again: the waiting watcher gets its NOTIFY
    # with <basic>open</basic>, then un-subscribes.
    assert checked(mesh, "refresh_watchers", ["sip:grace@127.0.0.1", "presence"]) == "OK"
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)


def test_expiry_of_a_publication_and_of_a_subscription_is_notified(
        mesh: PresenceMesh) -> None:
    publisher = mesh.sipp_run("publisher.xml", "erin", keys=[("basic", "open"),
                                                            ("expires", "4")])
    assert publisher.returncode == 0, sipp_failure(mesh, publisher)
    watcher = mesh.sipp_run("watcher_expiry.xml", "erin", timeout=60)
    assert watcher.returncode == 0, sipp_failure(mesh, watcher)
    assert not mesh.subscriptions("erin@127.0.0.1") and not mesh.publications("erin@127.0.0.1")


def test_an_unknown_event_package_is_489(mesh: PresenceMesh) -> None:
    proc = mesh.sipp_run("bad_event.xml", "carol")
    assert proc.returncode == 0, sipp_failure(mesh, proc)


def test_kill_9_of_presence_keeps_the_subscription(mesh: PresenceMesh) -> None:
    watcher = mesh.sipp_run("watcher.xml", "dave", background=True)
    wait_for(lambda: mesh.subscriptions("dave@127.0.0.1"), 20, "the subscription")
    # The promise is about an acknowledged subscription: the row is written before the
    # answer leaves, so a kill in between is a 503 the watcher retries, not a loss. Kill
    # only once the watcher holds its 200 (sipp writes its message file as it goes).
    wait_for(lambda: ACKNOWLEDGED.search(mesh.messages(watcher)), 20,
             "the watcher's 200 to its SUBSCRIBE")
    pid = int(mesh.mesh.line(r"^started presence pid (\d+)").group(1))
    os.kill(pid, signal.SIGKILL)
    mesh.mesh.expect(r"^started presence pid (\d+)", 30)
    # The restarted service loaded the subscription back from its SQLite file.
    (sub,) = wait_for(lambda: _quiet(lambda: mesh.subscriptions("dave@127.0.0.1")), 30,
                      "the subscription after the restart")
    assert sub["status"] == "active"
    publisher = wait_for(lambda: _published(mesh), 30, "a PUBLISH answered after restart")
    assert publisher.returncode == 0
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)


def _published(mesh: PresenceMesh) -> object:
    proc = mesh.sipp_run("publisher.xml", "dave", keys=[("basic", "open"), ("expires", "60")],
                         timeout=5)
    return proc if proc.returncode == 0 else None


def _quiet(fn: object) -> object:
    try:
        return fn()  # type: ignore[operator]
    except Exception:
        return None
