"""The routing API example of the README works as documented (parallel then serial fork)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.edge.routing import LoadedRouter, RouterSetup, load_router
from shared.sip import Request, Response
from tests.unit.edge.proxyharness import Harness, answer, invite, to

ROOT = Path(__file__).resolve().parents[3]


def _readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("# myrouting.py")
    return text[start:text.index("```", start)]


@pytest.fixture
def router(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LoadedRouter]:
    source = _readme_example()
    # The example's desks and voicemail live on loopback ports this harness can observe.
    source = source.replace("10.0.0.11", "127.0.0.1:5101").replace(
        "10.0.0.12", "127.0.0.1:5102").replace("10.0.0.50", "127.0.0.1:5150")
    (tmp_path / "readme_routing.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield load_router("readme_routing", RouterSetup(frozenset(), {}))
    sys.modules.pop("readme_routing", None)


def test_readme_routing_example_forks_then_fails_over(router: LoadedRouter) -> None:
    h = Harness(router)
    sends = h.feed(invite("sip:sales@127.0.0.1:5060", extra="X-Internal: 1\r\n"))
    desks = [m for p in (5101, 5102) for m in to(sends, p) if isinstance(m, Request)]
    assert [d.uri for d in desks] == ["sip:desk1@127.0.0.1:5101", "sip:desk2@127.0.0.1:5102"]
    assert not desks[0].has("X-Internal") and desks[0].has("Record-Route")
    h.feed(answer(desks[0], 486), peer=("127.0.0.1", 5101))
    sends = h.feed(answer(desks[1], 480), peer=("127.0.0.1", 5102))
    [vm] = [m for m in to(sends, 5150) if isinstance(m, Request)]
    assert vm.uri == "sip:vm@127.0.0.1:5150"
    sends = h.feed(answer(vm, 200), peer=("127.0.0.1", 5150))
    assert [m.status for m in to(sends, 5091) if isinstance(m, Response)] == [200]


def test_readme_routing_example_refuses_untrusted_sales_calls(router: LoadedRouter) -> None:
    h = Harness(router, trusted=())
    sends = h.feed(invite("sip:sales@127.0.0.1:5060"))
    assert [m.status for m in to(sends, 5091) if isinstance(m, Response)] == [100, 403]
