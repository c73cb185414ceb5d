"""CI drift check: contracts/generated must be exactly what `make proto` produces."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from contracts import build

ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_up_to_date() -> None:
    run = subprocess.run([sys.executable, "-m", "contracts.build", "--check"], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr


def test_check_detects_stale_missing_and_extra_files(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    build.generate(fresh)
    committed = tmp_path / "committed"
    shutil.copytree(fresh, committed)
    assert build.stale(fresh, committed) == []
    pb2 = committed / "sipmesh/health/v1/probe_pb2.py"
    pb2.write_text(pb2.read_text() + "\n# hand edit\n")
    (committed / "sipmesh/health/v1/probe_pb2.pyi").unlink()
    (committed / "sipmesh/health/v1/leftover_pb2.py").write_text("")
    assert build.stale(fresh, committed) == [
        "sipmesh/health/v1/leftover_pb2.py",
        "sipmesh/health/v1/probe_pb2.pyi",
        "sipmesh/health/v1/probe_pb2.py",
    ]


def test_every_proto_has_generated_modules() -> None:
    for proto in (ROOT / "contracts/proto").rglob("*.proto"):
        rel = proto.relative_to(ROOT / "contracts/proto").with_suffix("")
        base = ROOT / "contracts/generated" / rel.parent / rel.name
        assert Path(f"{base}_pb2.py").exists() and Path(f"{base}_pb2_grpc.py").exists()


def test_stamps_do_not_depend_on_the_tools_patch_release() -> None:
    """A fresh machine resolving grpcio-tools 1.85.4 instead of 1.85.1 must not see drift."""
    grpc_stub = "GRPC_GENERATED_VERSION = '1.85.4'\n"
    pb2 = ("# Protobuf Python Version: 7.35.1\n"
           "_runtime_version.ValidateProtobufRuntimeVersion(\n"
           "    _runtime_version.Domain.PUBLIC,\n    7,\n    35,\n    1,\n    '',\n")
    assert build.normalize_stamps(grpc_stub) == "GRPC_GENERATED_VERSION = '1.85.0'\n"
    out = build.normalize_stamps(pb2)
    assert "# Protobuf Python Version: 7.35.0\n" in out
    assert "    7,\n    35,\n    0,\n" in out
    # every committed module carries the normalised stamps
    for path in (ROOT / "contracts/generated").rglob("*.py"):
        text = path.read_text()
        assert build.normalize_stamps(text) == text, path
