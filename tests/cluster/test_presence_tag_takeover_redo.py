"""Two presence nodes sharing the real PostgreSQL (`sipmesh up --nodes 2`): the holder of
sharing tag `presence` is killed -9 while the NOTIFY of a PUBLISH it started is still
unanswered (the watcher drops it, as a datagram lost on the way), and the node that takes
the tag redoes it: the watcher gets the new state in the next NOTIFY of its dialog (CSeq
one above the lost one), once. The watcher is the Python test UA, so the test chooses
which NOTIFY it answers.
"""

from __future__ import annotations

import asyncio
import os
import signal
import uuid
from collections.abc import Iterator

import pytest

from shared.sip import Request
from tests.cluster.test_presence_cluster import (
    _pid_of,
    holder,
    node_mi,
    nodes,
    publish,
    two_nodes_on_postgresql,
)
from tests.integration.media.sip_ua import SipUA
from tests.integration.presence.harness import PresenceMesh, wait_for

pytestmark = pytest.mark.peers


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PresenceMesh]:
    # The killed node stays down a while: the redo is the survivor's.
    yield from two_nodes_on_postgresql(tmp_path_factory.mktemp("presence-takeover"), "30")


def cseq(req: Request) -> int:
    return req.cseq.number


async def next_notify(ua: SipUA, above: int, timeout: float) -> tuple[Request, tuple[str, int]]:
    """The next NOTIFY whose CSeq is above `above` (retransmissions of older ones, which
    the edge keeps sending while nobody answers them, are skipped)."""
    async with asyncio.timeout(timeout):
        while True:
            req, addr = await ua.requests.get()
            if req.method == "NOTIFY" and cseq(req) > above:
                return req, addr


async def test_the_node_taking_a_dead_holders_tag_redoes_its_unanswered_notify(
        mesh: PresenceMesh) -> None:
    wait_for(lambda: len(nodes(mesh)) == 2, 20, "two presence nodes in discovery")
    first = wait_for(lambda: holder(mesh), 20, "a holder of sharing tag presence")
    other = next(n for n in nodes(mesh) if n != first)
    metas = nodes(mesh)

    ua = SipUA("watcher")
    await ua.open()
    try:
        edge = ("127.0.0.1", mesh.sip_port)
        gina = f"sip:gina@{mesh.edge}"  # (the edge's own address: handed to presence)
        sub = ua.request("SUBSCRIBE", gina, call_id=f"w{uuid.uuid4().hex}", from_tag="wtag",
                         to=gina, cseq=1)
        for name, value in (("Event", "presence"), ("Accept", "application/pidf+xml"),
                            ("Expires", "600")):
            sub.add_header(name, value, first=False)
        assert (await ua.transact(sub, edge)).status == 200
        first_notify, addr = await next_notify(ua, 0, 10)
        assert cseq(first_notify) == 1
        ua.answer(first_notify, addr, 200)

        # The PUBLISH's NOTIFY (from the holder): started, and never answered.
        await asyncio.to_thread(publish, mesh, "gina")
        lost, _ = await next_notify(ua, 1, 20)
        assert cseq(lost) == 2 and b"<basic>open</basic>" in lost.body
        os.kill(_pid_of(mesh, first), signal.SIGKILL)

        # The survivor takes the tag and redoes it: the new state, next CSeq, active.
        redo, addr = await next_notify(ua, 2, 30)
        ua.answer(redo, addr, 200)
        assert cseq(redo) == 3
        assert (redo.get("Subscription-State") or "").startswith("active;expires=")
        assert b"<basic>open</basic>" in redo.body
        assert await asyncio.to_thread(holder, mesh) == other

        # Once: the survivor's table says CSeq 3 was the last NOTIFY of the dialog.
        def last_cseq() -> int | None:
            subs = node_mi(metas[other], "subs_phtable_list")["Subscriptions"]
            mine = [s for s in subs if s["callid"] == sub.call_id]
            return int(mine[0]["local_cseq"]) if mine else None

        assert await asyncio.to_thread(last_cseq) == 3
    finally:
        ua.close()
