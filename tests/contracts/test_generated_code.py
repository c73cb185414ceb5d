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
