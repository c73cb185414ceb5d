"""REGISTER's digest checked by the registrar on Save (SaveWithDigest, issue 22): the edge's
default routing and proxy core in memory, its real RegistrarClient, the real registrar
servicer on a loopback gRPC port with a SQLite subscriber store.

One round trip per REGISTER (no GetCredentials); a wrong password is challenged again
(401) and a subscriber's credentials for another To user refused (403), as when the edge
checked; a replayed nonce-count never reaches the registrar; a registrar older than the
call (it answers that it does not know it, or UNIMPLEMENTED) makes the edge check the
digest itself, as before, on the Session stream and on unary calls."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.edge.auth import ProxyAuthenticator
from services.edge.registrar_client import RegistrarClient
from services.registrar.app import SERVICE, RegistrarServicer
from services.registrar.location import Location
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.sip import Response, answer_challenge, parse_challenge
from tests.unit.edge.proxyharness import Harness
from tests.unit.edge.test_edge_registrar_routing import DOMAIN, final, register, run

CALL_TIMEOUT = 10.0  # a loaded CI box; nothing here waits for a deadline


class CountingRegistrar(RegistrarServicer):
    """Today's registrar, counting the calls it got by kind: on the Session stream as they
    arrive, else the unary calls."""

    def __init__(self, ul: UserLocation, *, streaming: bool) -> None:
        super().__init__(ul)
        self.calls: Counter[str] = Counter()
        self.streaming = streaming

    def _unary(self, kind: str) -> None:
        if not self.streaming:
            self.calls[kind] += 1

    async def Session(self, request_iterator: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async def counted() -> AsyncIterator[Any]:
            async for batch in request_iterator:
                self.calls.update(req.WhichOneof("call") for req in batch.calls)
                yield batch

        async for message in super().Session(counted(), context):
            yield message

    async def Save(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._unary("save")
        return await super().Save(request, context)

    async def SaveWithDigest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._unary("save_with_digest")
        return await super().SaveWithDigest(request, context)

    async def GetCredentials(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._unary("credentials")
        return await super().GetCredentials(request, context)


class OlderRegistrar(CountingRegistrar):
    """A registrar from before SaveWithDigest: unary, the generated UNIMPLEMENTED; on the
    Session, what app.py answered then to a call it does not know (and nothing done)."""

    async def SaveWithDigest(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        self._unary("save_with_digest")
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "Method not implemented!")

    async def Session(self, request_iterator: Any,
                      context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async for batch in request_iterator:
            out = pb.SessionReplies()
            for req in batch.calls:
                kind = req.WhichOneof("call")
                self.calls[kind] += 1
                if kind == "save":
                    out.replies.add(id=req.id, save=await super().Save(req.save, context))
                elif kind == "credentials":
                    out.replies.add(id=req.id, credentials=await super().GetCredentials(
                        req.credentials, context))
                else:  # not known then
                    out.replies.add(id=req.id, error="no call in the request")
            yield out


@dataclass
class Mesh:
    h: Harness
    servicer: CountingRegistrar
    client: RegistrarClient
    ul: UserLocation


@pytest.fixture(params=["session", "unary"])
async def mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    async for m in _mesh(tmp_path, CountingRegistrar, streaming=request.param == "session"):
        yield m


@pytest.fixture(params=["session", "unary"])
async def old_mesh(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Mesh]:
    async for m in _mesh(tmp_path, OlderRegistrar, streaming=request.param == "session"):
        yield m


async def _mesh(tmp_path: Path, kind: type[CountingRegistrar],
                *, streaming: bool) -> AsyncIterator[Mesh]:
    from shared.rpc.grpc_helpers import start_grpc_server

    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    await store.add("alice", DOMAIN, "alice-pw")
    await store.add("bob", DOMAIN, "bob-pw")
    ul = UserLocation(Location(), store)
    servicer = kind(ul, streaming=streaming)
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
            servicer, s)], services=[SERVICE])
    client = RegistrarClient(addresses=[f"127.0.0.1:{server.port}"], timeout=CALL_TIMEOUT,
                             streaming=streaming, batch_window=0.0)
    h = Harness(local_domains=(DOMAIN,))
    h.core.services.update({"registrar": client, "auth": ProxyAuthenticator(
        "sipmesh", {}, b"k" * 32, time.time)})
    try:
        yield Mesh(h, servicer, client, ul)
    finally:
        await client.close()
        await server.stop(0)
        await store.close()


def _authorization(challenge: Response, user: str, password: str, nc: int = 1) -> str:
    assert challenge.status == 401, challenge.status
    offered = parse_challenge(challenge.get("WWW-Authenticate") or "")
    creds = answer_challenge(offered, username=user, password=password, method="REGISTER",
                             uri=f"sip:{DOMAIN}", cnonce="c", nc=nc)
    return f"Authorization: {creds}\r\n"


async def _register(m: Mesh, user: str, password: str, cseq: int = 1,
                    **kw: Any) -> tuple[Response, str]:
    """REGISTER, its 401, the REGISTER with credentials: (final answer, Authorization).
    (`cseq` names the transactions too: one per attempt of a test.)"""
    challenge = final(await run(m.h, m.h.feed(register(user, cseq=cseq, **kw))))
    auth = _authorization(challenge, user, password)
    answer = final(await run(m.h, m.h.feed(register(user, cseq=cseq + 1, auth=auth, **kw))))
    return answer, auth


def _contacts(m: Mesh, aor: str) -> list[str]:
    return [b.uri for b in m.ul.location.lookup(aor, "", time.time())]


async def test_one_round_trip_per_register_and_the_binding_saved(mesh: Mesh) -> None:
    ok, _ = await _register(mesh, "alice", "alice-pw")
    assert ok.status == 200
    assert ok.get_all("Contact") == ["<sip:alice@10.0.0.9:5091>;expires=600;q=0.7"]
    assert mesh.servicer.calls == Counter({"save_with_digest": 1})
    assert _contacts(mesh, "alice@example.com") == ["sip:alice@10.0.0.9:5091"]
    assert mesh.client.digest_on_save


async def test_wrong_password_401_and_other_users_credentials_403(mesh: Mesh) -> None:
    wrong, _ = await _register(mesh, "alice", "guess")
    assert wrong.status == 401 and wrong.get("WWW-Authenticate")
    unknown, _ = await _register(mesh, "mallory", "x")
    assert unknown.status == 401
    other, _ = await _register(mesh, "alice", "alice-pw", cseq=10, to_user="bob")
    assert other.status == 403
    assert other.reason == "Forbidden: credentials are not for the To user"
    assert _contacts(mesh, "alice@example.com") == []
    assert _contacts(mesh, "bob@example.com") == []
    assert mesh.servicer.calls == Counter({"save_with_digest": 3})  # never GetCredentials


async def test_wrong_answer_does_not_burn_the_nonce_count(mesh: Mesh) -> None:
    # A forged answer with a nonce it saw (wrong response, nc 1): the registrar rejects
    # it and the edge gives the count back, so the phone's own nc 1 still passes.
    challenge = final(await run(mesh.h, mesh.h.feed(register("alice"))))
    forged = _authorization(challenge, "alice", "guess")
    assert final(await run(mesh.h, mesh.h.feed(
        register("alice", cseq=2, auth=forged)))).status == 401
    right = _authorization(challenge, "alice", "alice-pw")
    assert final(await run(mesh.h, mesh.h.feed(
        register("alice", cseq=3, auth=right)))).status == 200


async def test_replayed_nonce_count_is_challenged_without_reaching_the_registrar(
        mesh: Mesh) -> None:
    ok, auth = await _register(mesh, "alice", "alice-pw")
    assert ok.status == 200
    # The captured Authorization (nc 1) sent again, with another Contact and a new CSeq.
    replay = final(await run(mesh.h, mesh.h.feed(
        register("alice", cseq=3, auth=auth, contact_port=6666))))
    assert replay.status == 401
    assert mesh.servicer.calls == Counter({"save_with_digest": 1})
    assert _contacts(mesh, "alice@example.com") == ["sip:alice@10.0.0.9:5091"]


async def test_an_older_registrar_gets_the_edge_checked_path(old_mesh: Mesh) -> None:
    m = old_mesh
    ok, _ = await _register(m, "alice", "alice-pw")
    assert ok.status == 200
    # Asked once, refused without effect, then GetCredentials + Save as before.
    assert m.servicer.calls == Counter({"save_with_digest": 1, "credentials": 1, "save": 1})
    assert not m.client.digest_on_save  # the next REGISTERs go the old way at once
    wrong, _ = await _register(m, "bob", "guess")
    assert wrong.status == 401
    other, _ = await _register(m, "bob", "bob-pw", cseq=10, to_user="alice")
    assert other.status == 403
    assert m.servicer.calls["save"] == 1
    assert m.servicer.calls["save_with_digest"] == 1
    assert _contacts(m, "alice@example.com") == ["sip:alice@10.0.0.9:5091"]


async def test_a_password_changed_is_seen_at_once_despite_the_cache(mesh: Mesh) -> None:
    # The registrar caches subscribers 2 s; a check failing on a cached entry reads again
    # (the old password still passes until the entry expires, as with the edge's cache).
    assert (await _register(mesh, "alice", "alice-pw"))[0].status == 200
    await mesh.ul.store.set_password("alice", DOMAIN, "new-pw")
    assert (await _register(mesh, "alice", "new-pw", cseq=20))[0].status == 200
    mesh.ul.subscriber_ttl = 0.0  # entries expire at once: the old one is refused
    assert (await _register(mesh, "alice", "alice-pw", cseq=30))[0].status == 401
    await mesh.ul.store.add("carol", DOMAIN, "carol-pw")  # unknown a moment ago: cached
    assert (await _register(mesh, "carol", "carol-pw"))[0].status == 200
