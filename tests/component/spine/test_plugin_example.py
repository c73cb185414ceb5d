"""The README's "plugging a service in" example, run as written (minus the process)."""

from __future__ import annotations

import asyncio
import os
import signal
from typing import Any

from opensips.mi import OpenSIPSMI

from shared.config import load_section
from shared.discovery import DiscoveryConfig
from shared.service import RuntimeConfig, ServiceRuntime
from tests.component.spine.helpers import running_mesh


async def test_readme_example_service_is_reachable_through_the_gateway() -> None:
    async with running_mesh() as mesh:
        env = {"SIPMESH_DISCOVERY_URL": mesh.discovery.url, "SIPMESH_DIALOG_RUNTIME_PORT": "0"}
        rt = ServiceRuntime("dialog", config=load_section(RuntimeConfig, "dialog.runtime",
                                                          environ=env),
                            discovery=load_section(DiscoveryConfig, "discovery", environ=env))
        active = rt.stats.counter("dialog", "active_dialogs")
        active.inc(2)

        @rt.command("dlg_list", params=((), ("callid",)), fanout=True)
        async def dlg_list(callid: str | None = None) -> dict[str, Any]:
            return {"Dialogs": [{"callid": callid or "c1"}]}

        rt.meta["sip_udp"] = "sip:127.0.0.1:5060;transport=udp"
        serving = asyncio.create_task(rt.serve())
        registry = mesh.registry.registry
        async with asyncio.timeout(5):
            while not await registry.healthy("dialog"):
                await registry.wait_instances("dialog", registry.index, 1)
        mi = OpenSIPSMI("http", url=mesh.gateway_url)
        # The opensips package is synchronous: run it off the loop the gateway serves on.
        got = await asyncio.to_thread(mi.execute, "dlg_list", {"callid": "abc"})
        assert got == {"Dialogs": [{"callid": "abc"}]}
        stats = await asyncio.to_thread(mi.execute, "get_statistics", [["dialog:"]])
        assert stats == {"dialog:active_dialogs": 2}
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(serving, 10)
        assert await registry.instances("dialog") == []
