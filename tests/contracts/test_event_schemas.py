"""Every event schema in contracts/events is a valid JSON Schema named after its event."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

EVENTS = Path(__file__).resolve().parents[2] / "contracts" / "events"


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.stem)
def test_event_schema_is_valid_and_named_after_the_event(path: Path) -> None:
    doc = json.loads(path.read_text())
    jsonschema.Draft202012Validator.check_schema(doc)
    assert path.stem.startswith("E_") and doc["title"] == path.stem
    assert doc["type"] == "object"


def test_there_are_event_schemas() -> None:
    assert len(list(EVENTS.glob("E_*.json"))) >= 1
