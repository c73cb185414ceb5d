"""A TCP gate for tests: forwards connections to a target until it is cut.

Put between a client and a server (the client dials ``gate.address``), it makes a network
partition without iptables or hooks in the code under test: :meth:`Gate.cut` drops every
open connection and refuses new ones (they are accepted and closed at once, as a peer
that is gone); :meth:`Gate.heal` lets connections through again. Runs on the test's own
event loop (:class:`Gate`) or in a thread of its own for tests that drive processes
(:class:`ThreadGate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading


class Gate:
    def __init__(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self.target = (host, int(port))
        self.open = True
        self.address = ""
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        self.address = f"127.0.0.1:{port}"
        return self.address

    def cut(self) -> None:
        self.open = False
        for w in list(self._writers):
            w.transport.abort()
        self._writers.clear()

    def heal(self) -> None:
        self.open = True

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.open:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer),
                             return_exceptions=True)
        self._writers.difference_update((writer, up_writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.transport.abort()


class ThreadGate:
    """A :class:`Gate` on an event loop in a thread of its own (for synchronous tests)."""

    def __init__(self, target: str) -> None:
        self.gate = Gate(target)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self.address = asyncio.run_coroutine_threadsafe(self.gate.start(), self._loop).result(5)

    def retarget(self, target: str) -> None:
        host, _, port = target.rpartition(":")
        self._loop.call_soon_threadsafe(setattr, self.gate, "target", (host, int(port)))

    def cut(self) -> None:
        self._loop.call_soon_threadsafe(self.gate.cut)

    def heal(self) -> None:
        self._loop.call_soon_threadsafe(self.gate.heal)

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.gate.close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
