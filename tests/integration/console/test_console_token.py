"""The web console of a gateway bound off loopback: the MI's token rule applies.

`sipmesh up` with `[gateway] host = 0.0.0.0` and a token: without credentials the page is
a login form (401) and the view and its stream are refused; the bearer token opens them;
in a real Chromium a wrong token is refused on the form and the right one sets the
console's cookie, after which the page goes live with no console error.
"""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.spine.meshproc import MeshProcess
from tests.support.browser import chromium, console_errors, count, text_of
from tests.support.waiting import eventually_sync

pytestmark = pytest.mark.timeout(120)
TOKEN = "console-t0ken-42"


def outside_address() -> str:
    """An address of this machine that is not loopback (the bind is 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect(("192.0.2.1", 9))  # TEST-NET-1: no packet is sent for UDP
            address = str(probe.getsockname()[0])
        except OSError:
            return "127.0.0.1"
    return address


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    tmp = tmp_path_factory.mktemp("console-token")
    m = MeshProcess(tmp, SIPMESH_MESH_SERVICES="gateway", SIPMESH_GATEWAY_HOST="0.0.0.0",
                    SIPMESH_GATEWAY_TOKEN=TOKEN)
    port = m.gateway_url.rsplit(":", 1)[1].split("/")[0]
    yield f"http://{outside_address()}:{port}"
    m.stop()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}),
                                    timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_without_the_token_only_the_login_form(base: str) -> None:
    status, body = get(base + "/")
    assert status == 401 and 'action="/console/login"' in body and "console.js" not in body
    assert get(base + "/console/state")[0] == 401
    assert get(base + "/console/events")[0] == 401
    assert get(base + "/", {"Authorization": "Bearer wrong"})[0] == 401
    # The assets hold no data: the login form needs its style.
    assert get(base + "/console/static/console.css")[0] == 200


def test_the_bearer_token_opens_page_and_view(base: str) -> None:
    bearer = {"Authorization": "Bearer " + TOKEN}
    status, body = get(base + "/", bearer)
    assert status == 200 and "console.js" in body
    status, body = get(base + "/console/state", bearer)
    assert status == 200 and '"services"' in body


def test_login_form_in_a_browser(base: str, tmp_path: Path,
                                 tmp_path_factory: pytest.TempPathFactory) -> None:
    with chromium(tmp_path_factory.mktemp("chromium-token")) as browser:
        browser.get(base + "/")
        assert count(browser, "form#login") == 1
        # The only error so far: the 401 of the page itself (the form came with it).
        assert all("401" in e["message"] for e in console_errors(browser))
        sign_in(browser, "not-the-token")
        eventually_sync(lambda: text_of(browser, "#login-error") == "Wrong token.", 10,
                        "the refusal shown")
        console_errors(browser)  # the refused POST's 401, as above
        sign_in(browser, TOKEN)
        eventually_sync(lambda: text_of(browser, "#status") == "live", 20, "the console live")
        eventually_sync(lambda: count(browser, '#services-body tr[data-service="gateway"]')
                        == 1, 20, "the gateway listed")
        cookie = browser.get_cookie("sipmesh_console")
        assert cookie is not None and cookie["httpOnly"] and TOKEN not in cookie["value"]
        assert console_errors(browser) == []
        path = tmp_path / "console-signed-in.png"
        assert browser.save_screenshot(str(path))
        print(f"screenshot: {path}")


def sign_in(browser: Any, token: str) -> None:
    field = browser.find_element("id", "token")
    field.clear()
    field.send_keys(token)
    browser.find_element("id", "sign-in").click()


def test_the_state_is_never_a_stale_view(base: str) -> None:
    """Fresh from the poller while a page is open, polled on the spot otherwise: never
    the view of a page that went away."""
    import json

    bearer = {"Authorization": "Bearer " + TOKEN}

    def state_time() -> float:
        return float(json.loads(get(base + "/console/state", bearer)[1])["time"])

    first = state_time()
    eventually_sync(lambda: state_time() > first, 5, "a newer view")
