"""The mypyc-compiled core gives the same answers as the pure Python (shared/compiled.py).

A copy of the tree is compiled as `make compiled` does it, then the unit tiers of the
compiled packages (the SIP parser and model, the transaction layer, the edge's core) run
in that copy with ``SIPMESH_COMPILED=require``: every module of the list imported from its
extension or the run fails at import, and every assertion the pure code passes in
`make test-fast` must hold for the compiled code.  A copy, so that the developer's own tree
keeps whatever build it has.  Skipped, saying why, where no C compiler or Python headers
are installed: there the pure Python is what runs.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from shared import compiled

ROOT = Path(__file__).resolve().parents[3]
COPIED = ("shared", "services", "contracts", "gateway", "sipmesh", "examples", "tests")
UNIT_TIERS = ("tests/unit/sip", "tests/unit/transaction", "tests/unit/edge")

needs_compiler = pytest.mark.skipif(
    shutil.which(sysconfig.get_config_var("CC").split()[0] if sysconfig.get_config_var("CC")
                 else "cc") is None
    or not Path(sysconfig.get_paths()["include"], "Python.h").exists(),
    reason="no C compiler or Python headers: the pure-Python core runs")


def _copy_tree(dest: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.so", "compiled.json", ".hypothesis")
    for name in COPIED:
        shutil.copytree(ROOT / name, dest / name, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, dest / name)


@needs_compiler
@pytest.mark.timeout(1200)
def test_the_compiled_core_passes_the_unit_tiers_of_its_packages(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    _copy_tree(tree)
    env = {k: v for k, v in os.environ.items() if k != compiled.ENV}
    # The C compiler without optimisation: the same code mypyc emits, half the build time.
    build = subprocess.run([sys.executable, "-m", "shared.build_compiled"], cwd=tree,
                           env={**env, "SIPMESH_COMPILED_OPT": "0"},
                           capture_output=True, text=True, timeout=900)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    status = subprocess.run([sys.executable, "-m", "shared.build_compiled", "--status"],
                            cwd=tree, env=env, capture_output=True, text=True, timeout=60)
    assert status.stdout.strip() == "sipmesh compiled core: compiled", status.stdout
    for module in compiled.MODULES:
        assert list((tree / module.replace(".", "/")).parent.glob(
            module.rsplit(".", 1)[1] + ".*.so")), f"{module} was not compiled"

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *UNIT_TIERS],
        cwd=tree, env={**env, compiled.ENV: "require"}, capture_output=True, text=True,
        timeout=900)
    assert tests.returncode == 0, tests.stdout[-5000:] + tests.stderr[-3000:]
    assert " passed" in tests.stdout.splitlines()[-1]
