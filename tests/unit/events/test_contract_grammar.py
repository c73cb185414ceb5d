"""known_valid: the fast proof that a contract is a valid schema (shared/events/schema.py).

A contract it accepts skips jsonschema's metaschema walk at start-up, so it must never
accept a schema the Draft 2020-12 metaschema rejects: each broken variant of a real
contract below is both refused by it and still fails ``EventCatalog.load``."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from shared.events.schema import EventCatalog, default_contracts_dir, known_valid

CONTRACTS = sorted(default_contracts_dir().glob("E_*.json"))
BASE = "E_UL_CONTACT_INSERT"  # flat: strings with minLength, bounded integers


def _load(name: str) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((default_contracts_dir() / f"{name}.json").read_text())
    return doc


@pytest.mark.parametrize("path", CONTRACTS, ids=lambda p: p.stem)
def test_what_it_accepts_the_metaschema_accepts(path: Path) -> None:
    schema = json.loads(path.read_text())
    if known_valid(schema):
        Draft202012Validator.check_schema(schema)


def test_most_contracts_take_the_fast_proof() -> None:
    proven = [p.stem for p in CONTRACTS if known_valid(json.loads(p.read_text()))]
    assert BASE in proven and len(proven) * 2 > len(CONTRACTS), proven


def _prop(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        s["properties"]["qval"][key] = value
    return change


def _top(key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def change(s: dict[str, Any]) -> None:
        s[key] = value
    return change


BROKEN: dict[str, Callable[[dict[str, Any]], None]] = {
    "description-not-a-string": _top("description", 5),
    "title-null": _top("title", None),
    "schema-not-a-string": _top("$schema", 7),
    "id-with-a-fragment": _top("$id", "sipmesh:events/E_X#part"),
    "required-twice": _top("required", ["aor", "aor"]),
    "required-not-a-list": _top("required", "aor"),
    "additional-not-a-schema": _top("additionalProperties", "no"),
    "properties-a-list": _top("properties", []),
    "type-misspelt": _prop("type", "integr"),
    "type-list-empty": _prop("type", []),
    "type-list-twice": _prop("type", ["integer", "integer"]),
    "minimum-a-string": _prop("minimum", "0"),
    "maximum-a-boolean": _prop("maximum", True),
    "minlength-negative": _prop("minLength", -1),
    "minlength-a-string": _prop("minLength", "1"),
    "pattern-not-a-regex": _prop("pattern", "(unclosed"),
    "pattern-a-number": _prop("pattern", 5),
    "property-description-a-number": _prop("description", 1),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_a_broken_contract_still_fails_at_load(name: str, tmp_path: Path) -> None:
    schema = copy.deepcopy(_load(BASE))
    BROKEN[name](schema)
    assert not known_valid(schema)
    (tmp_path / f"{BASE}.json").write_text(json.dumps(schema))
    with pytest.raises(SchemaError):
        EventCatalog.load(tmp_path)
