"""The supervisor's rolling restart in-process (POST /restart/<service>, what `sipmesh
restart` calls): the child is drained with SIGTERM, started again at once without
counting as a crash, and the answer waits for the new process's /ready."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from sipmesh.catalog import ChildSpec
from sipmesh.supervisor import MeshConfig, Supervisor
from tests.support.waiting import eventually

TINY = ChildSpec("tiny", "tests.component.deploy.tiny_service")
SURGING = ChildSpec("tiny", "tests.component.deploy.tiny_service", surge=True)


async def _running(env: Mapping[str, str] | None = None, spec: ChildSpec = TINY
                   ) -> tuple[Supervisor, asyncio.Event, asyncio.Task[None], list[str]]:
    lines: list[str] = []
    cfg = MeshConfig(registry_port=0, backoff_initial=5.0, stop_timeout=10)
    sup = Supervisor([spec], cfg, env=env, out=lines.append)
    stop = asyncio.Event()
    run = asyncio.create_task(sup.run(stop))
    async def registered() -> bool:
        return bool(sup.registry_url) and bool(await sup.server.registry.instances("tiny"))

    await eventually(registered, 60, "tiny registered")
    return sup, stop, run, lines


@pytest.fixture
async def mesh() -> AsyncIterator[tuple[Supervisor, list[str]]]:
    sup, stop, run, lines = await _running()
    yield sup, lines
    stop.set()
    await asyncio.wait_for(run, 30)


async def _restart(sup: Supervisor, service: str, timeout: float = 60
                   ) -> tuple[int, dict[str, Any]]:
    url = f"{sup.registry_url}/restart/{service}"
    async with aiohttp.ClientSession() as http, \
            http.post(url, params={"timeout": str(timeout)}) as resp:
        return resp.status, await resp.json()


async def test_rolling_restart_replaces_the_process_and_waits_for_ready(
        mesh: tuple[Supervisor, list[str]]) -> None:
    sup, lines = mesh
    child = sup.children["tiny"]
    assert child.proc is not None
    old = child.proc.pid
    status, body = await _restart(sup, "tiny")
    assert status == 200 and body["ok"] is True
    [step] = body["steps"]
    assert step["child"] == "tiny" and step["old_pid"] == old and step["ready"] is True
    assert child.proc is not None and child.proc.pid == step["pid"] != old
    assert child.restarts == 0 and child.backoff == 0.0  # not a crash: no backoff
    [inst] = await sup.server.registry.instances("tiny")
    assert inst.meta["pid"] == str(step["pid"]) and inst.meta["ready"] == "1"
    assert f"rolling restart tiny pid {old}" in lines
    assert any(re.fullmatch(rf"exited tiny pid {old} rc 0; rolling restart", x) for x in lines)
    assert any(re.fullmatch(rf"rolling restart tiny pid {step['pid']} ready in [\d.]+s", x)
               for x in lines)


async def test_unknown_service_is_404(mesh: tuple[Supervisor, list[str]]) -> None:
    sup, _ = mesh
    status, body = await _restart(sup, "nosuch")
    assert status == 404 and "nosuch" in body["error"]


async def test_a_replacement_that_never_gets_ready_is_reported() -> None:
    sup, stop, run, _ = await _running(dict(os.environ, TINY_NEVER_READY="1"))
    try:
        status, body = await _restart(sup, "tiny", timeout=5)
        assert status == 504 and body["ok"] is False
        [step] = body["steps"]
        assert step["ready"] is False and step["pid"] != step["old_pid"]
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


async def test_ready_means_ready_in_discovery_too() -> None:
    """/ready 200 is not enough: the clients pick instances by the registration's meta
    "ready", and draining the next node before it says "1" leaves them none (issue 20)."""
    sup, stop, run, _ = await _running(dict(os.environ, TINY_UNPUBLISHED="1"))
    try:
        status, body = await _restart(sup, "tiny", timeout=3)
        assert status == 504 and body["ok"] is False
        [step] = body["steps"]
        assert step["ready"] is False and step["pid"] != step["old_pid"]
        [inst] = await sup.server.registry.instances("tiny")
        assert inst.meta["pid"] == str(step["pid"]) and inst.meta["ready"] == "0"
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


async def test_a_surge_restart_starts_the_new_process_before_stopping_the_old() -> None:
    """A `surge` service (the FreeSWITCH bridge) overlaps its two processes: the old one
    gets SIGTERM only once the new one is ready, and the new one is kept as the child."""
    sup, stop, run, lines = await _running(spec=SURGING)
    try:
        child = sup.children["tiny"]
        assert child.proc is not None
        old = child.proc.pid
        status, body = await _restart(sup, "tiny")
        assert status == 200 and body["ok"] is True
        [step] = body["steps"]
        new = step["pid"]
        assert step["old_pid"] == old and step["ready"] is True and new != old
        started = lines.index(f"started tiny pid {new}")
        exited = next(i for i, x in enumerate(lines)
                      if x.startswith(f"exited tiny pid {old} "))
        ready = next(i for i, x in enumerate(lines)
                     if re.fullmatch(rf"rolling restart tiny pid {new} ready in [\d.]+s", x))
        assert started < exited < ready, lines
        await eventually(lambda: child.proc is not None and child.proc.pid == new, 10,
                         "the new process adopted as the child")
        assert child.restarts == 0 and child.successor is None
        [inst] = await sup.server.registry.instances("tiny")
        assert inst.meta["pid"] == str(new)
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)


async def test_a_surge_replacement_that_never_gets_ready_leaves_the_old_one_running() -> None:
    sup, stop, run, _ = await _running(dict(os.environ, TINY_NEVER_READY="1"), SURGING)
    try:
        child = sup.children["tiny"]
        assert child.proc is not None
        old = child.proc
        status, body = await _restart(sup, "tiny", timeout=3)
        assert status == 504 and body["ok"] is False
        [step] = body["steps"]
        assert step["ready"] is False and step["pid"] != old.pid
        assert child.proc is old and old.returncode is None  # still serving
        pids = {i.meta["pid"] for i in await sup.server.registry.instances("tiny")}
        assert pids == {str(old.pid)}  # the replacement stopped and forgotten
    finally:
        stop.set()
        await asyncio.wait_for(run, 30)
