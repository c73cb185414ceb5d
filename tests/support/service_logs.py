"""The logs of the processes a test started, printed with its failure.

CI keeps nothing of a run but its output, so a flaky failure of a test that runs real
services (brokers, rtpengine, sipp, edges) is diagnosable only if their logs are in that
output.  A rig registers each log once (a file, or a callable for a log kept in memory);
when a test that uses the `service_logs` fixture fails (setup, call or teardown), the
`pytest_runtest_makereport` wrapper below appends the end of every registered log to the
report, where pytest prints it as a section of the failure ("log broker-1", ...).

A conftest enables it by importing both names:

    from tests.support.service_logs import pytest_runtest_makereport, service_logs
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

TAIL_LINES = 150  # per log: the end of it (the failure is usually near the end)
WARNING_LINES = 60  # and the last warnings/errors before that end, which may be far back


class ServiceLogs:
    """Named logs, read only when a test failed."""

    def __init__(self) -> None:
        self._logs: dict[str, Callable[[], str]] = {}

    def add(self, name: str, source: Path | Callable[[], str]) -> None:
        if isinstance(source, Path):
            path = source
            self._logs[name] = lambda: (path.read_text(errors="replace") if path.exists()
                                        else f"({path} does not exist)")
        else:
            self._logs[name] = source

    def sections(self) -> list[tuple[str, str]]:
        out = []
        for name, read in self._logs.items():
            try:
                text = read()
            except OSError as exc:
                text = f"(unreadable: {exc})"
            out.append((f"log {name}", excerpt(text)))
        return out


def excerpt(text: str) -> str:
    """The warnings/errors before the last TAIL_LINES lines, then those lines."""
    lines = text.splitlines()
    head, tail = lines[:-TAIL_LINES], lines[-TAIL_LINES:]
    marked = [ln for ln in head if any(w in ln.lower() for w in
                                       ("warning", "error", "traceback", "exception"))]
    parts = []
    if marked:
        parts.append(f"[{len(marked)} warning/error lines before the end; the last "
                     f"{min(len(marked), WARNING_LINES)}:]")
        parts += marked[-WARNING_LINES:]
    if head:
        parts.append(f"[... {len(head)} lines; the last {len(tail)}:]")
    return "\n".join(parts + tail)


@pytest.fixture(scope="module")
def service_logs() -> Iterator[ServiceLogs]:
    yield ServiceLogs()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item,
                              call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report: pytest.TestReport = outcome.get_result()
    logs = getattr(item, "funcargs", {}).get("service_logs")
    if report.failed and isinstance(logs, ServiceLogs):
        report.sections.extend(logs.sections())
