"""Bad input to the registrar gets an answer, never a traceback (issue 12), and never
poisons what comes after it (issue 11: nothing acknowledged lost).

* gRPC: thousands of mutated REGISTERs (seeded, reproducible) through `Save` and the
  `Session` stream, odd AORs through `Lookup` and `GetCredentials`: every call gets a
  reply (a SIP status or found/not found), no RPC error, nothing logged as an exception.
  A REGISTER whose header holds bytes that are not UTF-8 is refused with 400: stored, such
  a binding could not be answered (protobuf strings), looked up, dumped or written to SQL.
* MI: wrong types, missing and extra params, lone surrogates, huge numbers: JSON-RPC
  errors (4xx/-326xx), never -32603 Internal error.
* After all that, a good REGISTER is still answered 200 once stored, and found.
"""

from __future__ import annotations

import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from structlog.testing import capture_logs

from contracts.generated.sipmesh.registrar.v1 import registrar_pb2 as pb
from contracts.generated.sipmesh.registrar.v1 import registrar_pb2_grpc as pb_grpc
from services.registrar.app import SERVICE, RegistrarServicer
from services.registrar.location import Location
from services.registrar.mi import register_mi
from services.registrar.persistence import LocationWriter, SQLiteLocationTable
from services.registrar.subscribers import SQLiteSubscribers
from services.registrar.usrloc import UserLocation
from shared.discovery.memory import MemoryRegistry
from shared.rpc.grpc_helpers import start_grpc_server
from shared.service import ServiceRuntime

REGISTER = (
    "REGISTER sip:example.com SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.5:5062;branch=z9hG4bK1\r\n"
    "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
    "Call-ID: c1\r\nCSeq: {cseq} REGISTER\r\nMax-Forwards: 70\r\nPath: <sip:p1;lr>\r\n"
    "Supported: path\r\nUser-Agent: phone/1.0\r\nContact: <sip:alice@10.0.0.5:5062>;q=0.7;"
    "+sip.instance=\"<urn:uuid:1>\";reg-id=1;methods=\"INVITE,BYE\"\r\n"
    "Expires: 120\r\nContent-Length: 0\r\n\r\n")
PIECES = [b";", b",", b"<", b">", b"\"", b"\x00", b"\r", b"\n", b"%", b"@", b":", b"=", b"*",
          b" ", b"\xff", b"\xc3", b"-1", b"99999999999999999999", b"\r\n\r\n", b"\t"]
AORS = ["alice@example.com", "", "@", "a@", "@b", "a@b@c", "sip:a@b", "a b@c", "\x00@x",
        "é@ü", "a@[::1]", "a@b;c=d", "x" * 3000]


def mutate(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        at = rng.randrange(len(out)) if out else 0
        roll = rng.random()
        if roll < 0.3 and out:
            out[at] = rng.randrange(256)
        elif roll < 0.55:
            out[at:at] = rng.choice(PIECES)
        elif roll < 0.75 and out:
            del out[at:at + rng.randint(1, 12)]
        else:
            src = rng.randrange(len(out)) if out else 0
            out[at:at] = out[src:src + rng.randint(1, 40)]
    return bytes(out)


@pytest.fixture
async def registrar(tmp_path: Path) -> AsyncIterator[tuple[Any, UserLocation, ServiceRuntime]]:
    store = SQLiteSubscribers(tmp_path / "s.sqlite")
    await store.open()
    await store.add("alice", "example.com", "pw")
    table = SQLiteLocationTable(tmp_path / "s.sqlite")
    await table.open()
    writer = LocationWriter(table, write_through=True)  # the default configuration
    writer.start()
    ul = UserLocation(Location(), store, writer=writer)
    runtime = ServiceRuntime("registrar", registry=MemoryRegistry())
    register_mi(runtime, ul, table)
    server = await start_grpc_server(
        [lambda s: pb_grpc.add_RegistrarServicer_to_server(  # type: ignore[no-untyped-call]
            RegistrarServicer(ul), s)],
        services=[SERVICE])
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{server.port}")
    yield pb_grpc.RegistrarStub(channel), ul, runtime  # type: ignore[no-untyped-call]
    await channel.close()
    await server.stop(0)
    await writer.stop()
    await table.close()
    await store.close()


def save_request(rng: random.Random, message: bytes) -> Any:
    return pb.SaveRequest(message=message, source_host=rng.choice(["10.0.0.5", "", "::1"]),
                          source_port=rng.choice([0, 5062, 65535]),
                          transport=rng.choice(["udp", "", "tcp", "sctp"]),
                          socket="udp:127.0.0.1:5060")


async def good_register_still_works(stub: Any, ul: UserLocation, cseq: int) -> None:
    reply = await stub.Save(save_request(random.Random(0), REGISTER.format(cseq=cseq).encode()),
                            timeout=5)
    assert reply.status == 200, reply
    assert ul.writer is not None and ul.writer.settled  # answered once stored
    found = await stub.Lookup(pb.LookupRequest(aor="alice@example.com", method="INVITE"),
                              timeout=5)
    assert found.status == 200 and found.branches[0].uri == "sip:alice@10.0.0.5:5062"


async def test_mutated_grpc_requests_get_an_answer_and_poison_nothing(
        registrar: tuple[Any, UserLocation, ServiceRuntime]) -> None:
    stub, ul, _ = registrar
    rng = random.Random(20261206)
    base = REGISTER.format(cseq=1).encode()
    statuses: set[int] = set()
    with capture_logs() as logs:
        for _ in range(600):
            reply = await stub.Save(save_request(rng, mutate(rng, base)), timeout=5)
            statuses.add(reply.status)
            aor = rng.choice(AORS)
            assert (await stub.Lookup(pb.LookupRequest(aor=aor, method="INVITE",
                                                       federated=True), timeout=5)).status
            await stub.GetCredentials(pb.CredentialsRequest(username=aor, domain=aor),
                                      timeout=5)
        session = stub.Session()
        for n in range(20):  # the same through the stream, 20 calls per message
            await session.write(pb.SessionRequests(calls=[pb.SessionRequest(
                id=n * 20 + i, save=save_request(rng, mutate(rng, base))) for i in range(20)]))
        got = 0
        while got < 400:
            message = await session.read()
            assert message is not grpc.aio.EOF
            for reply in message.replies:
                assert not reply.error and reply.save.status >= 200, reply
                got += 1
        await session.done_writing()
    assert {200, 400} <= statuses, statuses  # the mutations reached both outcomes
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")
                or "exc_info" in e], logs
    await good_register_still_works(stub, ul, cseq=10_000)


async def test_mutated_save_with_digest_requests_get_an_answer(
        registrar: tuple[Any, UserLocation, ServiceRuntime]) -> None:
    # SaveWithDigest (issue 22): damaged REGISTERs and damaged credentials (none of them a
    # right answer for alice), never a 200, an RPC error or a logged traceback.
    stub, _, _ = registrar
    rng = random.Random(20261207)
    base = REGISTER.format(cseq=1).encode()
    texts = [*AORS, "MD5", "SHA-256-sess", "auth-int", "00000001", "\u00e9", "x" * 3000]
    statuses: set[int] = set()
    with capture_logs() as logs:
        for _ in range(300):
            request = save_request(rng, mutate(rng, base) if rng.random() < 0.7 else base)
            request.digest.CopyFrom(pb.Digest(**{
                name: rng.choice(texts) for name in pb.Digest.DESCRIPTOR.fields_by_name
                if rng.random() < 0.8}))
            reply = await stub.SaveWithDigest(request, timeout=5)
            statuses.add(reply.status)
            assert reply.status != 200, reply
            assert reply.digest_rejected == (reply.status == 401), reply
    assert {400, 401} <= statuses, statuses
    assert not [e for e in logs if e.get("log_level") in ("error", "critical")
                or "exc_info" in e], logs


async def test_a_register_with_bytes_that_are_not_utf8_is_refused(
        registrar: tuple[Any, UserLocation, ServiceRuntime]) -> None:
    stub, ul, runtime = registrar
    bad = REGISTER.format(cseq=1).replace("phone/1.0", "phone/\udc92").encode(
        "utf-8", "surrogateescape")  # a raw 0x92 byte in User-Agent
    reply = await stub.Save(save_request(random.Random(0), bad), timeout=5)
    assert reply.status == 400
    assert "alice@example.com" not in ul.location.records
    await good_register_still_works(stub, ul, cseq=2)
    answer = json.loads(await runtime.mi.dispatch(json.dumps(
        {"jsonrpc": "2.0", "id": 1, "method": "ul_dump"})))
    assert [a["AOR"] for a in answer["result"]["Domains"][0]["AORs"]] == ["alice@example.com"]


async def test_bad_mi_calls_get_json_rpc_errors_never_internal_ones(
        registrar: tuple[Any, UserLocation, ServiceRuntime]) -> None:
    stub, ul, runtime = registrar
    rng = random.Random(5)
    values: list[Any] = [None, "", "location", "alice@example.com", "@", "a@", "sip:a@b", 0,
                         -1, 1.5, 2**70, -(2**70), [], {}, [1, 2], {"a": 1}, True, "\ud800",
                         "a@\udc92", "sip:\ud800@x", "é@ü", "x" * 5000, "1e400"]
    commands = ["ul_dump", "ul_show_contact", "ul_rm", "ul_rm_contact", "ul_add", "ul_flush",
                "ul_sync", "ul_cluster_sync"]
    keys = ["table_name", "aor", "contact", "expires", "q", "flags", "cflags", "methods",
            "unused", "brief", "bogus"]
    codes: set[int] = set()
    for n in range(800):
        params: Any
        if rng.random() < 0.5:
            params = [rng.choice(values) for _ in range(rng.randint(0, 10))]
            if params and rng.random() < 0.7:
                params[0] = "location"
        else:
            params = {k: rng.choice(values) for k in rng.sample(keys, rng.randint(0, 8))}
        body = json.dumps({"jsonrpc": "2.0", "id": n, "method": rng.choice(commands),
                           "params": params})
        answer = json.loads(await runtime.mi.dispatch(body))
        if "error" in answer:
            codes.add(answer["error"]["code"])
            assert answer["error"]["code"] not in (-32603, -32000), (body, answer)
    assert {400, -32602} <= codes, codes
    # ul_add of text that is not UTF-8 (a lone surrogate through JSON) is refused, so the
    # location table is never asked to store what it cannot.
    for aor, contact in (("a@\udc92", "sip:x@y"), ("b@x", "sip:\ud800@y")):
        answer = json.loads(await runtime.mi.dispatch(json.dumps({
            "jsonrpc": "2.0", "id": 1, "method": "ul_add",
            "params": ["location", aor, contact, 60, "1", 0, 0, 0]})))
        assert answer["error"]["code"] == 400
    assert ul.writer is not None and ul.writer.failures == 0
    await good_register_still_works(stub, ul, cseq=20_000)
