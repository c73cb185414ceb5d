"""Log format and level: `[log] format = json` (SIPMESH_LOG_FORMAT) for every process, and
a level changed while the process runs reaching loggers already created (MI log_level).
Run in a child process: structlog's configuration is process-wide."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from shared.service.logsetup import opensips_level

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = """
import structlog
from shared.service import logsetup
logsetup.configure_logging("probe")
log = structlog.get_logger("probe")
log.debug("hidden_at_info")
log.info("first", call_id="abc@host")
logsetup.set_level(logsetup.OPENSIPS_LEVELS[4])
log.debug("shown_at_debug")
logsetup.set_level(logsetup.OPENSIPS_LEVELS[-1])
log.warning("hidden_at_error")
log.error("shown_at_error")
"""


def run(**env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, capture_output=True,
                          text=True, timeout=30, env={"PYTHONPATH": str(ROOT), **env})


def test_json_lines_and_a_level_changed_at_run_time() -> None:
    done = run(SIPMESH_LOG_FORMAT="json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stderr.splitlines()]
    assert [d["event"] for d in lines] == ["first", "shown_at_debug", "shown_at_error"]
    first = lines[0]
    assert first["service"] == "probe" and first["call_id"] == "abc@host"
    assert first["level"] == "info" and "timestamp" in first and isinstance(first["pid"], int)


def test_console_is_the_default_and_the_level_setting_applies() -> None:
    done = run(SIPMESH_LOG_LEVEL="debug")
    assert done.returncode == 0, done.stderr
    assert "hidden_at_info" in done.stderr and "[info     ] first" in done.stderr
    assert not done.stderr.lstrip().startswith("{")


def test_a_bad_format_is_a_configuration_error() -> None:
    done = run(SIPMESH_LOG_FORMAT="xml")
    assert done.returncode == 78
    assert "configuration error" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("python,opensips", [(10, 4), (20, 3), (30, 1), (40, -1), (50, -2)])
def test_python_levels_on_the_opensips_scale(python: int, opensips: int) -> None:
    assert opensips_level(python) == opensips
