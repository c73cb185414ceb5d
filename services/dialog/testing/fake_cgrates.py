"""A fake CGRateS (cgr-engine's SessionSv1 over JSON-RPC), for tests and demos.

CGRateS is a Go binary that cannot be installed here, so the billing flow is tested
against this fake, written from CGRateS's documentation of the two calls OpenSIPS's
`cgrates` module uses:

* it serves `SessionSv1.AuthorizeEvent` over raw JSON-RPC on TCP (Go's net/rpc/jsonrpc
  codec: a JSON object per request, `params` a one-element array, the reply `{"id",
  "result", "error"}` with `error` null on success). The answer's `MaxUsage` is scripted
  per account, in nanoseconds: -1 unlimited, 0 no credit; an unknown account is an error
  (`ACCOUNT_NOT_FOUND`), as CGRateS answers;
* it pushes `SessionSv1.DisconnectSession {EventStart: {OriginID}, Reason}` - what
  cgr-engine sends when credit runs out - to the mesh: the gateway's JSON-RPC endpoint,
  where the dialog service answers it by ending the call (BYE both ways, CDR written).

The contract suite (tests/contracts/test_cgrates_contract.py) runs against this fake, or
against a real cgr-engine when `CGRATES_ADDR=host:port` is set.

Run it by hand: `python -m services.dialog.testing.fake_cgrates --port 2012 --account
1001=60 --account 1002=-1` (1001 may talk 60 s, 1002 without limit).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from typing import Any

NS = 1_000_000_000


class FakeCGRateS:
    def __init__(self, accounts: dict[str, int] | None = None, *, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        self.accounts: dict[str, int] = dict(accounts or {})  # account -> MaxUsage (ns)
        self.host = host
        self.port = port
        self.authorized: list[dict[str, Any]] = []  # every AuthorizeEvent's event
        self._server: asyncio.Server | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def set_credit(self, account: str, seconds: float | None) -> None:
        """Scripts `account`'s MaxUsage: None unlimited, 0 no credit, else seconds."""
        self.accounts[account] = -1 if seconds is None else int(seconds * NS)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, self.host, self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk.decode("utf-8", "replace")
                while buf.strip():
                    try:
                        request, end = decoder.raw_decode(buf.lstrip())
                    except json.JSONDecodeError:
                        break  # more to come
                    buf = buf.lstrip()[end:]
                    writer.write(json.dumps(self.answer(request)).encode())
                    await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    def answer(self, request: Any) -> dict[str, Any]:
        """One JSON-RPC reply as net/rpc/jsonrpc writes it."""
        rid = request.get("id") if isinstance(request, dict) else None
        if not isinstance(request, dict) or not isinstance(request.get("method"), str):
            return {"id": rid, "result": None, "error": "rpc: bad request"}
        method = request["method"]
        params = request.get("params")
        arg = params[0] if isinstance(params, list) and params else params
        if method == "SessionSv1.AuthorizeEvent":
            event = arg.get("Event") if isinstance(arg, dict) else None
            if not isinstance(event, dict) or not event.get("Account"):
                return {"id": rid, "result": None, "error": "MANDATORY_IE_MISSING: [Account]"}
            self.authorized.append(event)
            account = str(event["Account"])
            if account not in self.accounts:
                return {"id": rid, "result": None, "error": "ACCOUNT_NOT_FOUND"}
            return {"id": rid, "error": None, "result": {
                "AttributesDigest": None, "ResourceAllocation": None,
                "MaxUsage": self.accounts[account], "ThresholdIDs": None, "StatQueueIDs": None}}
        if method == "CoreSv1.Ping":
            return {"id": rid, "result": "Pong", "error": None}
        return {"id": rid, "result": None,
                "error": f"rpc: can't find service {method}"}

    @staticmethod
    async def disconnect(mesh_url: str, origin_id: str, reason: str = "INSUFFICIENT_CREDIT",
                         token: str = "") -> dict[str, Any]:
        """Pushes SessionSv1.DisconnectSession to the mesh (the gateway's /mi); its answer."""
        import aiohttp

        body = {"jsonrpc": "2.0", "id": 1, "method": "SessionSv1.DisconnectSession",
                "params": [{"EventStart": {"OriginID": origin_id}, "Reason": reason}]}
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with aiohttp.ClientSession() as session, session.post(
                mesh_url, json=body, headers=headers,
                timeout=aiohttp.ClientTimeout(total=10)) as resp:
            answer: dict[str, Any] = await resp.json()
            return answer


def main() -> None:
    p = argparse.ArgumentParser(description="A fake CGRateS SessionSv1 (see the docstring)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=2012)
    p.add_argument("--account", action="append", default=[],
                   help="ACCOUNT=SECONDS (-1 unlimited, 0 no credit); repeatable")
    args = p.parse_args()
    fake = FakeCGRateS(host=args.host, port=args.port)
    for item in args.account:
        name, _, seconds = item.partition("=")
        fake.set_credit(name, None if float(seconds) < 0 else float(seconds))

    async def run() -> None:
        await fake.start()
        print(f"fake cgrates ready {fake.address}", flush=True)
        try:
            await asyncio.Event().wait()
        finally:
            await fake.close()

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(run())


if __name__ == "__main__":
    main()
