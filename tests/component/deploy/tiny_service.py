"""A minimal service process for the supervisor tests: registers as ``tiny`` and is ready
unless ``TINY_NEVER_READY=1`` (a backend that never comes)."""

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
    await rt.serve()


if __name__ == "__main__":
    asyncio.run(main())
