"""The gateway over real HTTP with real service runtimes registered in a real registry."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

import aiohttp
import pytest

from shared.rpc import MiError, RpcError
from tests.component.spine.helpers import running_mesh, service, started


async def test_core_commands_answer_in_opensips_shapes() -> None:
    async with running_mesh() as mesh:
        up = await mesh.client.call("uptime")
        assert set(up) == {"Now", "Up since", "Up time"}
        assert up["Up time"].endswith(" [sec]")
        assert (await mesh.client.call("version"))["Server"].startswith("SipMesh (")
        ps = await mesh.client.call("ps")
        assert [p["PID"] for p in ps["Processes"]] and ps["Processes"][0]["Type"].startswith(
            "gateway ")
        assert set(await mesh.client.call("which")) >= {
            "version", "uptime", "ps", "which", "get_statistics", "list_statistics",
            "reset_statistics"}
        assert await mesh.client.call("which", {"command": "get_statistics"}) == [
            [], ["statistics"]]


async def test_service_command_is_routed_and_params_positional_or_named() -> None:
    async with running_mesh() as mesh:
        rt = service("echoer", mesh.discovery)

        @rt.command("echo_back", params=(("text",), ("text", "times")))
        async def echo_back(text: str, times: str = "1") -> dict[str, str]:
            return {"echo": text * int(times), "by": rt.instance_id}

        async with started(rt):
            assert "echo_back" in await mesh.client.call("which")
            named = await mesh.client.call("echo_back", {"text": "ab", "times": "2"})
            assert named == {"echo": "abab", "by": rt.instance_id}
            assert (await mesh.client.call("echo_back", ["x"]))["echo"] == "x"
            assert await mesh.client.call("which", {"command": "echo_back"}) == [
                ["text"], ["text", "times"]]
            with pytest.raises(RpcError) as bad:
                await mesh.client.call("echo_back", {"wrong": "1"})
            assert bad.value.code == -32602
        # Once the service has stopped (deregistered), the command is gone from the mesh.
        with pytest.raises(RpcError) as gone:
            await mesh.client.call("echo_back", {"text": "x"})
        assert gone.value.code == -32601


async def test_service_errors_pass_through_and_crashes_hide_their_text() -> None:
    async with running_mesh() as mesh:
        rt = service("faulty", mesh.discovery)

        @rt.command("ul_show_contact", params=(("table_name", "aor"),))
        async def show(table_name: str, aor: str) -> None:
            raise MiError(404, "AOR not found")

        @rt.command("explode")
        async def explode() -> None:
            raise RuntimeError("secret /etc/passwd detail")

        async with started(rt):
            with pytest.raises(RpcError) as nf:
                await mesh.client.call("ul_show_contact", ["location", "bob@x"])
            assert (nf.value.code, nf.value.message) == (404, "AOR not found")
            async with aiohttp.ClientSession() as http:
                body = {"jsonrpc": "2.0", "id": 7, "method": "explode", "params": {}}
                async with http.post(mesh.gateway_url, json=body) as resp:
                    text = await resp.text()
            answer = json.loads(text)
            assert answer["error"] == {"code": -32603, "message": "Internal error"}
            assert "secret" not in text and "Traceback" not in text and "RuntimeError" not in text


async def test_statistics_are_merged_across_instances() -> None:
    async with running_mesh() as mesh:
        a, b = service("edge", mesh.discovery), service("edge", mesh.discovery)
        # Two instances in one test process need distinct ids.
        b.instance_id += "-b"
        a.stats.counter("core", "rcv_requests").inc(3)
        b.stats.counter("core", "rcv_requests").inc(4)
        b.stats.counter("tm", "UAS_transactions").inc(2)
        async with started(a), started(b):
            got = await mesh.client.call("get_statistics", [["core:rcv_requests", "tm:"]])
            assert got == {"core:rcv_requests": 7, "tm:UAS_transactions": 2}
            got = await mesh.client.call("get_statistics", {"statistics": ["load:"]})
            assert {"load:load", "load:load1m", "load:load10m"} <= set(got)
            # One load-proc-<ps ID> per process of the mesh: two edges and the gateway.
            procs = {k for k in got if k.startswith("load:load-proc-")}
            assert procs == {"load:load-proc-0", "load:load-proc-1", "load:load-proc-2"}
            assert all(0 <= v <= 100 for v in got.values())
            kinds = await mesh.client.call("list_statistics", {"statistics": ["core:", "load:"]})
            assert kinds["core:rcv_requests"] == "incremental"
            assert kinds["load:load"] == "non-incremental"
            assert await mesh.client.call("reset_statistics", [["core:rcv_requests"]]) == "OK"
            got = await mesh.client.call("get_statistics", [["core:rcv_requests"]])
            assert got == {"core:rcv_requests": 0}
            with pytest.raises(RpcError) as missing:
                await mesh.client.call("get_statistics", [["nosuch:thing"]])
            assert (missing.value.code, missing.value.message) == (404, "Statistics Not Found")


async def test_fanout_command_merges_answers_of_every_instance() -> None:
    async with running_mesh() as mesh:
        runtimes = [service("registrar", mesh.discovery) for _ in range(2)]
        for n, rt in enumerate(runtimes):
            rt.instance_id += f"-{n}"

            def make(n: int) -> Callable[[], Awaitable[dict[str, list[str]]]]:
                async def dump() -> dict[str, list[str]]:
                    return {"Contacts": [f"sip:user{n}@h"]}
                return dump

            rt.command("ul_dump", fanout=True)(make(n))
        async with started(runtimes[0]), started(runtimes[1]):
            got = await mesh.client.call("ul_dump")
            assert sorted(got["Contacts"]) == ["sip:user0@h", "sip:user1@h"]


async def test_unreachable_service_is_a_clear_503() -> None:
    async with running_mesh() as mesh:
        rt = service("ghost", mesh.discovery)

        @rt.command("ghost_cmd")
        async def ghost_cmd() -> str:
            return "boo"

        await rt.start()
        # Kill its HTTP side without deregistering, as a crashed process would leave it.
        assert rt._runner is not None
        await rt._runner.cleanup()
        with pytest.raises(RpcError) as err:
            await mesh.client.call("ghost_cmd")
        assert err.value.code == 503
        rt._runner = None
        await rt.stop()


async def test_batches_and_notifications() -> None:
    async with running_mesh() as mesh:
        results = await mesh.client.batch([("version", None), ("nope", None), ("uptime", {})])
        assert results[0]["Server"].startswith("SipMesh")
        assert isinstance(results[1], RpcError) and results[1].code == -32601
        assert "Up time" in results[2]
        async with aiohttp.ClientSession() as http:
            note = {"jsonrpc": "2.0", "method": "reset_statistics", "params": [["all"]]}
            async with http.post(mesh.gateway_url, json=note) as resp:
                assert resp.status == 204
            for raw, code in (("{nope", -32700), ("[]", -32600), ('{"jsonrpc":"2.0"}', -32600)):
                async with http.post(mesh.gateway_url, data=raw) as resp:
                    answer = json.loads(await resp.text())
                    assert answer["error"]["code"] == code
                    assert "data" not in answer["error"] or "line 1" not in str(
                        answer["error"].get("data"))


async def test_gateway_survives_registry_outage_for_core_commands() -> None:
    async with running_mesh() as mesh:
        await mesh.registry.stop()
        assert (await mesh.client.call("version"))["Server"].startswith("SipMesh")
        with pytest.raises(RpcError) as err:
            await mesh.client.call("ps")
        assert err.value.code == 503
