"""The asyncio side of NAT pinging: a UDP socket, the ping timer, replies -> latency.

Every `interval` seconds `PingRunner` asks the sans-IO `NatPinger` which bindings to ping
(the ones this node owns: the AOR's hash partition belongs to this node's index of
`ClusterNode.my_index` over capability `usrloc-contact-repl`, natping.owner_index),
sends each OPTIONS to its edge from one UDP socket of the registrar, and feeds answers
back: the latency is stored on the binding, `E_UL_LATENCY_UPDATE` raised as the thresholds
say, and bindings that missed `max_lost` pings in a row are removed (events, replication).

What a round reads first: in `full-sharing-cachedb` only this node's partitions of the
Redis ping index (`RedisLocationTable.load_partitions`), which become the working copy
of the table for the round -- never the whole table; in `sql-only` the whole shared table
(`UserLocation.refresh`); in the other modes nothing (the table is in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog

from services.registrar.cachedb import RedisLocationTable
from services.registrar.location import Binding
from services.registrar.natping import PARTITIONS, NatPinger, owned_partitions, owner_index
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

    @property
    def _partitions(self) -> int:
        table = self.ul.sql_only
        return table.partitions if isinstance(table, RedisLocationTable) else PARTITIONS

    def share(self) -> tuple[int, int]:
        """(this node's index, node count) for the split; (0, 1) without a cluster."""
        cluster = self.ul.cluster
        if cluster is None:
            return 0, 1
        index, count = cluster.my_index(CAPABILITY)
        return int(index), int(count)

    def mine(self, aor: str) -> bool:
        index, count = self.share()
        return index >= 0 and owner_index(aor, count, self._partitions) == index

    async def read(self) -> None:
        """The round's working copy of the table (see the module doc)."""
        table = self.ul.sql_only
        if not isinstance(table, RedisLocationTable):
            await self.ul.refresh()  # sql-only: the shared table; else a no-op
            return
        index, count = self.share()
        records: dict[str, list[Binding]] = {}
        for b in await table.load_partitions(
                owned_partitions(index, count, table.partitions), self.ul.clock()):
            records.setdefault(b.aor, []).append(b)
        self.ul.location.records = records

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
                await self.round()
            except Exception:
                self.log.exception("natping_failed")

    async def round(self) -> None:
        # sql-only / full-sharing-cachedb: the shared table is the truth; read it
        # (cachedb: only this node's share), write removals and latencies back.
        ul = self.ul
        await self.read()
        pings = self.pinger.due(list(ul.location.bindings()), ul.clock(), self.mine)
        if self.transport is not None:
            for ping in pings:
                self.transport.sendto(ping.data, (ping.edge_host, ping.edge_port))
        for aor, key in self.pinger.dead():
            # The AOR's every binding first (shared table; a no-op in memory): the round
            # read only the pinged ones, and the AOR is gone only with its last binding.
            await ul.refresh(aor)
            if ul.remove_contact(aor, key):
                self.log.info("natping_contact_removed", aor=aor, key=key)
        if ul.sql_only is not None:
            await ul.flush()

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
