"""A minimal service process for the supervisor tests: registers as ``tiny`` and is ready
unless ``TINY_NEVER_READY=1`` (a backend that never comes); ``TINY_UNPUBLISHED=1``: its
/ready says 200 but its registration keeps meta ``ready`` "0" (what clients choosing by
discovery see while a service has not yet published that it got ready)."""

from __future__ import annotations

import asyncio
import os

from shared.discovery import DiscoveryConfig
from shared.service import ServiceRuntime


async def main() -> None:
    rt = ServiceRuntime("tiny", discovery=DiscoveryConfig(
        url=os.environ["SIPMESH_DISCOVERY_URL"], ttl=3.0))
    never = os.environ.get("TINY_NEVER_READY") == "1"
    rt.ready_check("backend", lambda: not never)
    if os.environ.get("TINY_UNPUBLISHED") == "1":
        rt.meta["ready"] = "0"  # the service's own meta is laid over the runtime's
    await rt.serve()


if __name__ == "__main__":
    asyncio.run(main())
