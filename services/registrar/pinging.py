"""The asyncio side of NAT pinging: a UDP socket, the ping timer, replies -> latency.

Every `interval` seconds `PingRunner` asks the sans-IO `NatPinger` which bindings to ping
(the ones this node owns: `ClusterNode.my_index` over capability `usrloc-contact-repl`),
sends each OPTIONS to its edge from one UDP socket of the registrar, and feeds answers
back: the latency is stored on the binding, `E_UL_LATENCY_UPDATE` raised as the thresholds
say, and bindings that missed `max_lost` pings in a row are removed (events, replication).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from services.registrar.natping import NatPinger, owner_index
from services.registrar.usrloc import CAPABILITY, UserLocation, contact_event_params
from shared.sip import Response, SipParseError, parse_message


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, runner: PingRunner) -> None:
        self.runner = runner

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.runner.received(data)


class PingRunner:
    def __init__(self, ul: UserLocation, pinger: NatPinger, *, host: str = "127.0.0.1") -> None:
        self.ul = ul
        self.pinger = pinger
        self.host = host
        self.log = structlog.get_logger("registrar.natping")
        self.transport: asyncio.DatagramTransport | None = None
        self._task: asyncio.Task[None] | None = None

    def mine(self, aor: str) -> bool:
        cluster = self.ul.cluster
        if cluster is None:
            return True
        index, count = cluster.my_index(CAPABILITY)
        return index >= 0 and owner_index(aor, count) == index

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(
            lambda: _Protocol(self), local_addr=(self.host, 0))
        self.transport = transport
        self.pinger.via_host, self.pinger.via_port = transport.get_extra_info("sockname")[:2]
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.pinger.config.interval)
            try:
                # sql-only / full-sharing-cachedb: the shared table is the truth; read it
                # (this node then pings only its own share of it), write removals back.
                await self.ul.refresh()
                self.tick()
                if self.ul.sql_only is not None:
                    await self.ul.flush()
            except Exception:
                self.log.exception("natping_failed")

    def tick(self) -> None:
        ul = self.ul
        pings = self.pinger.due(list(ul.location.bindings()), ul.clock(), self.mine)
        if self.transport is not None:
            for ping in pings:
                self.transport.sendto(ping.data, (ping.edge_host, ping.edge_port))
        for aor, key in self.pinger.dead():
            if ul.remove_contact(aor, key):
                self.log.info("natping_contact_removed", aor=aor, key=key)

    def received(self, data: bytes) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        if not isinstance(msg, Response):
            return
        binding = None
        out = self.pinger.outstanding.get(msg.call_id)
        if out is not None:
            binding = next((b for b in self.ul.location.records.get(out.aor, ())
                            if b.key == out.key), None)
        answer = self.pinger.reply(msg.call_id, msg.status, self.ul.clock(),
                                   binding.latency if binding else 0)
        if answer is None or binding is None:
            return
        self.ul.set_latency(binding, answer.latency_us)
        if answer.raise_event and self.ul.events is not None:
            self.ul.events.publish("E_UL_LATENCY_UPDATE", contact_event_params(binding))

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self.transport is not None:
            self.transport.close()
