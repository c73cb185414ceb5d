"""Presence through a real `sipmesh up` in its default configuration, sipp as phones:
a watcher subscribes to bob's presence through the edge, bob publishes `open`, the watcher
gets a NOTIFY with the PIDF; un-subscribe gets the final NOTIFY; 489 for an unknown
package; kill -9 of the presence service keeps the subscription (the next PUBLISH still
reaches the watcher)."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from tests.integration.presence.harness import PresenceMesh, sipp_failure, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresenceMesh]:
    m = PresenceMesh(tmp_path_factory.mktemp("presence-mesh"))
    yield m
    m.stop()


def test_a_watcher_gets_the_pidf_bob_publishes(mesh: PresenceMesh) -> None:
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
    # The watcher got the NOTIFY with <basic>open</basic>, then un-subscribed and got the
    # final NOTIFY (terminated): its scenario checks each step.
    assert watcher.wait(60) == 0, sipp_failure(mesh, watcher)
    log = mesh.messages(watcher)
    assert "Subscription-State: terminated;reason=timeout" in log
    assert 'entity="sip:bob@127.0.0.1"' in log
    wait_for(lambda: not mesh.subscriptions("bob@127.0.0.1"), 10, "the subscription gone")


def test_an_unknown_event_package_is_489(mesh: PresenceMesh) -> None:
    proc = mesh.sipp_run("bad_event.xml", "carol")
    assert proc.returncode == 0, sipp_failure(mesh, proc)


def test_kill_9_of_presence_keeps_the_subscription(mesh: PresenceMesh) -> None:
    watcher = mesh.sipp_run("watcher.xml", "dave", background=True)
    wait_for(lambda: mesh.subscriptions("dave@127.0.0.1"), 20, "the subscription")
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
