"""`sipmesh parse FILE|-`: the installed console script, run as a user would run it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipmesh.cli.parse_cmd import lint
from tests.unit.sip.helpers import FIXTURES, fixture

SIPMESH = Path(sys.executable).parent / "sipmesh"


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    assert SIPMESH.exists(), f"console script missing: {SIPMESH} (make venv)"
    return subprocess.run(
        [str(SIPMESH), "parse", *args], input=stdin, capture_output=True, timeout=60, check=False
    )


def test_valid_request_prints_json_and_exits_0() -> None:
    proc = _run(str(FIXTURES / "valid" / "wsinv.sip"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["kind"] == "request"
    assert out["method"] == "INVITE"
    uri = out["request_uri"]
    assert (uri["scheme"], uri["user"], uri["host"], uri["port"]) == (
        "sip",
        "vivekg",
        "chair-dnrc.example.com",
        None,
    )
    assert uri["params"] == {"unknownparam": None}
    headers = out["headers"]
    assert len(headers["Via"]) == 3  # compact `v:` lines merged under the canonical name
    assert headers["Max-Forwards"] == ["0068"]
    assert headers["Contact"][0].startswith('"Quoted string')
    assert "Call-ID" in headers and "CSeq" in headers and "Subject" in headers
    assert out["body_length"] == 150
    assert proc.stderr == b""


def test_response_from_stdin() -> None:
    proc = _run("-", stdin=fixture("valid/unreason.sip"))
    assert proc.returncode == 0
    out = json.loads(proc.stdout)
    assert (out["kind"], out["status"]) == ("response", 200)
    assert out["reason"] == "= 2**3 * 5**2 но сто девяносто девять - простое"
    assert out["body_length"] == 150


@pytest.mark.parametrize(
    ("name", "line"),
    [
        ("quotbal", "400 Bad Request: unterminated quoted string in To"),
        ("badvers", "505 Version Not Supported: version SIP/7.0 not supported"),
        ("bigcode", "drop: malformed status code '4294967301'"),
    ],
)
def test_malformed_message_prints_one_line_and_exits_1(name: str, line: str) -> None:
    proc = _run(str(FIXTURES / "invalid" / f"{name}.sip"))
    assert proc.returncode == 1
    assert proc.stdout.decode() == line + "\n"
    assert proc.stderr == b""


def test_garbage_bytes_never_show_a_traceback() -> None:
    garbage = bytes(range(256)) * 3 + b"\r\n\r\n\xff\xfe\x00"
    proc = _run("-", stdin=garbage)
    assert proc.returncode == 1
    lines = proc.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1 and lines[0].startswith("400 Bad Request: ")
    assert b"Traceback" not in proc.stdout + proc.stderr


def test_unreadable_file_exits_2_without_traceback(tmp_path: Path) -> None:
    proc = _run(str(tmp_path / "missing.sip"))
    assert proc.returncode == 2
    assert b"cannot read" in proc.stderr
    assert b"Traceback" not in proc.stdout + proc.stderr


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_lint_answers_every_input_in_one_line_or_json(data: bytes) -> None:
    code, text = lint(data)
    if code == 0:
        assert json.loads(text)["kind"] in ("request", "response")
    else:
        assert code == 1
        assert "\n" not in text
        assert text.startswith("drop: ") or text[:3].isdigit()
