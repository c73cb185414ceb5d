"""Every event schema in contracts/events is a valid JSON Schema named after its event."""

from __future__ import annotations

import json
import re
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


@pytest.mark.parametrize("path", sorted(EVENTS.glob("*.json")), ids=lambda p: p.stem)
def test_every_event_names_its_family(path: Path) -> None:
    # The one table of event -> family: RabbitMQ routing keys are <family>.<EVENT_NAME>.
    family = json.loads(path.read_text()).get("x-sipmesh-family")
    assert isinstance(family, str) and re.fullmatch(r"[a-z][a-z0-9_]*", family), \
        f"{path.name}: x-sipmesh-family must be one lowercase AMQP topic word"


def test_readme_documents_every_family_binding() -> None:
    readme = (EVENTS.parents[1] / "README.md").read_text()
    families = {json.loads(p.read_text())["x-sipmesh-family"] for p in EVENTS.glob("E_*.json")}
    for family in sorted(families):
        assert f"`{family}.#`" in readme, f"README: no binding documented for {family}.#"
