"""A real headless browser for tests: Debian's Chromium driven through its chromedriver.

Nothing is downloaded at run time: both binaries come from Debian's ``chromium`` and
``chromium-driver`` packages (tests/peers/ensure.sh installs them) and selenium is given
both paths, so its driver manager never runs. Each browser gets a fresh profile in the
test's temporary directory. :func:`console_errors` reads the page's console (severe
entries: script errors, failed loads, CSP refusals).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--window-size=1400,1000")


def need_chromium() -> None:
    if not (Path(CHROMIUM).exists() and shutil.which(CHROMEDRIVER)):
        pytest.fail("Debian chromium and chromium-driver are needed (make peers installs them)")


@contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """A headless Chromium (selenium WebDriver) with a fresh profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    need_chromium()
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    profile.mkdir(parents=True, exist_ok=True)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


def console_errors(driver: Any) -> list[dict[str, Any]]:
    """The severe entries the page's console logged since the last call."""
    return [e for e in driver.get_log("browser") if e.get("level") == "SEVERE"]


# The page redraws its sections on every view it receives: each read below runs as one
# script in the page, so it never holds an element that a redraw replaced.
def texts(driver: Any, css: str) -> list[str]:
    """The text of every element matching ``css``, at one instant."""
    found = driver.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.textContent)",
        css)
    return [str(t) for t in found]


def text_of(driver: Any, css: str) -> str | None:
    """The text of the first element matching ``css``, None when there is none."""
    found = texts(driver, css)
    return found[0] if found else None


def attribute_of(driver: Any, css: str, name: str) -> str | None:
    value = driver.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "return e === null ? null : e.getAttribute(arguments[1])", css, name)
    return None if value is None else str(value)


def count(driver: Any, css: str) -> int:
    return int(driver.execute_script(
        "return document.querySelectorAll(arguments[0]).length", css))
