"""The supervisor in-process: restart backoff doubles and is capped; stop is clean."""

from __future__ import annotations

import asyncio
import re

import aiohttp
import pytest

from sipmesh.catalog import ChildSpec
from sipmesh.supervisor import MeshConfig, Supervisor


async def test_crashing_child_is_restarted_with_doubling_capped_backoff() -> None:
    lines: list[str] = []
    got_enough = asyncio.Event()

    def out(line: str) -> None:
        lines.append(line)
        if sum(1 for x in lines if x.startswith("exited crasher")) >= 4:
            got_enough.set()

    cfg = MeshConfig(registry_port=0, backoff_initial=0.05, backoff_max=0.2,
                     stable_after=60, stop_timeout=5)
    sup = Supervisor([ChildSpec("crasher", "tests.component.spine.exit_at_once")], cfg, out=out)
    stop = asyncio.Event()
    run = asyncio.create_task(sup.run(stop))
    await asyncio.wait_for(got_enough.wait(), 30)
    stop.set()
    await asyncio.wait_for(run, 15)
    delays = [float(m.group(1)) for x in lines
              if (m := re.search(r"^exited crasher pid \d+ rc 3; restart in ([\d.]+)s$", x))]
    assert delays[:4] == [0.05, 0.1, 0.2, 0.2], lines
    assert lines[0].startswith("registry http://127.0.0.1:")
    assert lines[-1] == "stopped"
    # The registry it hosted is gone with it.
    with pytest.raises(aiohttp.ClientError):
        async with aiohttp.ClientSession() as http:
            await http.get(f"{sup.registry_url}/v1/health")
