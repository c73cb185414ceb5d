"""JSON-RPC 2.0 client: jsonrpcclient builds and parses, aiohttp carries.

One :class:`JsonRpcClient` per peer URL; it owns (or borrows) one ``aiohttp.ClientSession``
and puts a total timeout on every request. Server errors come back as :class:`RpcError`
with the server's code, message and data; anything on the way (refused, timeout, not JSON)
is :class:`RpcTransportError`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import aiohttp
from jsonrpcclient import Error, Ok, notification, parse, request


class RpcError(Exception):
    """The server answered with a JSON-RPC error."""

    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.data = data


class RpcTransportError(Exception):
    """The request did not get a JSON-RPC answer (connection, timeout, HTTP status)."""


Params = dict[str, Any] | list[Any] | tuple[Any, ...] | None


class JsonRpcClient:
    """Calls one JSON-RPC endpoint over HTTP POST."""

    def __init__(
        self, url: str, *, token: str | None = None, timeout: float = 5.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        self.url = url
        self._token = token
        self._timeout = timeout
        self._session = session
        self._own_session = session is None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _post(self, body: Any, timeout: float | None) -> Any:
        headers = {"Content-Type": "application/json"}
        if self._token:
            headers["Authorization"] = f"Bearer {self._token}"
        try:
            async with self._http().post(
                self.url, data=json.dumps(body), headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout or self._timeout),
            ) as resp:
                if resp.status == 204:
                    return None
                text = await resp.text()
                if resp.status not in (200, 400, 500):
                    raise RpcTransportError(f"HTTP {resp.status} from {self.url}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RpcTransportError(str(exc) or type(exc).__name__) from exc
        try:
            return json.loads(text)
        except ValueError as exc:
            raise RpcTransportError(f"{self.url} answered non-JSON") from exc

    @staticmethod
    def _params(params: Params) -> Any:
        return tuple(params) if isinstance(params, list) else params

    async def call(
        self, method: str, params: Params = None, *, timeout: float | None = None
    ) -> Any:
        """Calls ``method``; returns its result or raises RpcError/RpcTransportError."""
        answer = await self._post(request(method, params=self._params(params)), timeout)
        if not isinstance(answer, dict):
            raise RpcTransportError(f"{self.url} answered no JSON-RPC response")
        parsed = parse(answer)
        if isinstance(parsed, Error):
            raise RpcError(parsed.code, parsed.message, parsed.data)
        assert isinstance(parsed, Ok)
        return parsed.result

    async def notify(self, method: str, params: Params = None) -> None:
        """Sends a notification (no answer expected)."""
        await self._post(notification(method, params=self._params(params)), None)

    async def batch(
        self, calls: Sequence[tuple[str, Params]], *, timeout: float | None = None
    ) -> list[Any]:
        """Sends a batch; returns results (or RpcError instances) in the order given."""
        reqs = [request(m, params=self._params(p)) for m, p in calls]
        answer = await self._post(reqs, timeout)
        if not isinstance(answer, list):
            raise RpcTransportError(f"{self.url} answered no batch")
        by_id: dict[Any, Any] = {}
        item: Any
        for item in parse(answer):
            by_id[item.id] = (
                RpcError(item.code, item.message, item.data) if isinstance(item, Error)
                else item.result
            )
        return [by_id.get(r["id"]) for r in reqs]

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
