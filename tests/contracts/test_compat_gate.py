"""The compatibility gate (contracts/compat.py): today's contracts pass against the released
snapshot; each kind of breaking change, made in a temporary copy, fails it; additive
changes pass; a new major accepts the break."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts import CONTRACTS_VERSION, compat

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "contracts"
REGISTRAR = "proto/sipmesh/registrar/v1/registrar.proto"


def test_the_released_snapshot_exists_and_today_passes() -> None:
    released = compat.latest_release()
    assert released is not None
    assert compat.version_key(released.name) <= compat.version_key(CONTRACTS_VERSION)
    for kind in compat.KINDS:
        assert any((released / kind).rglob("*.*")), kind
    ok, breaks = compat.gate(released)
    assert ok and breaks == [], breaks
    out = subprocess.run([sys.executable, "-m", "contracts.compat"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert f"contracts {CONTRACTS_VERSION} compatible with released {released.name}" in out.stdout


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A scratch copy of today's contracts to break."""
    target = tmp_path / "contracts"
    for kind in compat.KINDS:
        shutil.copytree(CONTRACTS / kind, target / kind,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert re.search(old, text, re.MULTILINE), f"{old!r} not in {path.name}"
    path.write_text(re.sub(old, new, text, count=1, flags=re.MULTILINE))


def _edit_json(path: Path, change: Callable[[Any], None]) -> None:
    doc = json.loads(path.read_text())
    change(doc)
    path.write_text(json.dumps(doc, indent=2))


def _released() -> Path:
    released = compat.latest_release()
    assert released is not None
    return released


def _breaks(copy: Path) -> list[str]:
    ok, breaks = compat.gate(_released(), copy)
    assert not ok, "the gate let a breaking change through"
    return breaks


def _proto_message(copy: Path, message: str) -> str:
    text = (copy / REGISTRAR).read_text()
    match = re.search(rf"^message {message} \{{.*?^\}}", text, re.MULTILINE | re.DOTALL)
    assert match, message
    return match.group(0)


def test_removed_field_fails(copy: Path) -> None:
    body = _proto_message(copy, "SaveRequest")
    first = re.search(r"^  (\w[\w.]*) (\w+) = (\d+);", body, re.MULTILINE)
    assert first
    _edit(copy / REGISTRAR, re.escape(first.group(0)), "")
    [line] = _breaks(copy)
    assert line == (f"proto: field sipmesh.registrar.v1.SaveRequest.{first.group(2)} = "
                    f"{first.group(3)} removed")


def test_renumbered_field_fails(copy: Path) -> None:
    body = _proto_message(copy, "SaveRequest")
    first = re.search(r"^  (\w[\w.]*) (\w+) = (\d+);", body, re.MULTILINE)
    assert first
    _edit(copy / REGISTRAR, re.escape(first.group(0)),
          f"  {first.group(1)} {first.group(2)} = 99;")
    breaks = _breaks(copy)
    assert f"proto: field sipmesh.registrar.v1.SaveRequest.{first.group(2)} renumbered " \
           f"{first.group(3)} -> 99" in breaks


def test_changed_type_fails(copy: Path) -> None:
    body = _proto_message(copy, "SaveRequest")
    field = re.search(r"^  (string|bytes) (\w+) = (\d+);", body, re.MULTILINE)
    assert field
    other = "int64"
    _edit(copy / REGISTRAR, re.escape(field.group(0)),
          f"  {other} {field.group(2)} = {field.group(3)};")
    [line] = _breaks(copy)
    assert line == (f"proto: field sipmesh.registrar.v1.SaveRequest.{field.group(2)} changed "
                    f"type optional {field.group(1)} -> optional {other}")


def test_removed_rpc_fails(copy: Path) -> None:
    _edit(copy / REGISTRAR, r"^  rpc Lookup\(.*\n", "")
    assert _breaks(copy) == ["proto: rpc sipmesh.registrar.v1.Registrar/Lookup removed"]


def test_removed_mi_parameter_and_result_field_fail(copy: Path) -> None:
    def drop_aor(doc: Any) -> None:
        form = doc["params"]["oneOf"][0]
        del form["properties"]["aor"]
        form["required"].remove("aor")

    _edit_json(copy / "mi/ul_show_contact.json", drop_aor)
    _edit_json(copy / "mi/ps.json",
               lambda doc: doc["result"]["properties"]["Processes"]["items"]["properties"]
               .pop("PID"))
    breaks = _breaks(copy)
    assert "mi: ul_show_contact params.oneOf[0]: field 'aor' removed" in breaks
    assert "mi: ps result.Processes[]: field 'PID' removed" in breaks


def test_new_required_parameter_and_removed_method_fail(copy: Path) -> None:
    def require_pid(doc: Any) -> None:
        doc["params"]["oneOf"][0] = {"type": "object", "properties": {"pid": {}},
                                     "required": ["pid"]}

    _edit_json(copy / "mi/ps.json", require_pid)
    (copy / "mi/uptime.json").unlink()
    breaks = _breaks(copy)
    assert "mi: ps params.oneOf[0]: field 'pid' became required" in breaks
    assert "mi: method uptime removed" in breaks


def test_event_field_removed_or_retyped_fails(copy: Path) -> None:
    def change(doc: Any) -> None:
        del doc["properties"]["received"]
        doc["properties"]["qval"]["type"] = "string"

    _edit_json(copy / "events/E_UL_CONTACT_INSERT.json", change)
    breaks = _breaks(copy)
    assert "events: E_UL_CONTACT_INSERT: field 'received' removed" in breaks
    assert "events: E_UL_CONTACT_INSERT.qval: type widened ['integer'] -> ['string']" in breaks


def test_additive_changes_pass(copy: Path) -> None:
    _edit(copy / REGISTRAR, r"^message SaveRequest \{\n",
          "message SaveRequest {\n  string added_by_a_newer_edge = 97;\n")
    _edit(copy / REGISTRAR, r"^  rpc Lookup\(",
          "  rpc Ping(LookupRequest) returns (LookupReply);\n  rpc Lookup(")
    _edit(copy / REGISTRAR, r"\Z", "\nmessage BrandNew {\n  int32 n = 1;\n}\n")

    def optional_param(doc: Any) -> None:
        doc["params"]["oneOf"][0]["properties"]["verbose"] = {"type": "boolean"}

    _edit_json(copy / "mi/ul_show_contact.json", optional_param)
    _edit_json(copy / "events/E_UL_CONTACT_INSERT.json",
               lambda doc: doc["properties"].update(region={"type": "string"}))
    new_event = json.loads((copy / "events/E_UL_CONTACT_INSERT.json").read_text())
    new_event["title"] = "E_UL_BRAND_NEW"
    (copy / "events/E_UL_BRAND_NEW.json").write_text(json.dumps(new_event))
    ok, breaks = compat.gate(_released(), copy)
    assert ok and breaks == [], breaks


def test_a_new_major_accepts_the_break_and_the_cli_reports_it(copy: Path) -> None:
    _edit(copy / REGISTRAR, r"^  rpc Lookup\(.*\n", "")
    ok, breaks = compat.gate(_released(), copy, version="1.0.0")
    assert ok and breaks == ["proto: rpc sipmesh.registrar.v1.Registrar/Lookup removed"]
    out = subprocess.run([sys.executable, "-m", "contracts.compat", "--current", str(copy)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert "BREAKING proto: rpc sipmesh.registrar.v1.Registrar/Lookup removed" in out.stderr


def test_snapshot_records_a_release_once(copy: Path, tmp_path: Path) -> None:
    released = tmp_path / "released"
    target = compat.snapshot("0.2.0", copy, released)
    assert (target / REGISTRAR).read_text() == (copy / REGISTRAR).read_text()
    assert compat.latest_release(released) == target
    with pytest.raises(SystemExit, match="never rewritten"):
        compat.snapshot("0.2.0", copy, released)


def test_today_is_compatible_with_every_release_of_this_major() -> None:
    """Minor releases only add: a service of any earlier X.* release still works beside
    today's contracts, not only one of the newest snapshot."""
    major = compat.version_key(CONTRACTS_VERSION)[0]
    releases = [p for p in sorted(compat.RELEASED.iterdir()) if compat._is_version(p.name)
                and compat.version_key(p.name)[0] == major]
    assert len(releases) >= 2  # 0.1.0 and 0.2.0
    for release in releases:
        ok, breaks = compat.gate(release)
        assert ok and breaks == [], (release.name, breaks)
