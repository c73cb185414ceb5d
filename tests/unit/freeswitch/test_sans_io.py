"""The bridge's protocol and balancing cores stay sans-IO (as shared/sip, shared/transaction:
tests/unit/test_architecture.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.unit.test_architecture import FORBIDDEN, _imports

ROOT = Path(__file__).resolve().parents[3]
CORES = ["services/freeswitch/esl.py", "services/freeswitch/balancing.py",
         "services/freeswitch/boxes.py"]


@pytest.mark.parametrize("path", CORES)
def test_core_imports_no_io(path: str) -> None:
    bad = _imports(ROOT / path) & FORBIDDEN
    assert not bad, f"{path} imports {sorted(bad)}"
