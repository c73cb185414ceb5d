"""The event catalog: which events exist and what their parameters look like.

Every event SipMesh raises has a JSON Schema in ``contracts/events/<NAME>.json``, with the
OpenSIPS event name and parameter names (E_UL_CONTACT_INSERT {aor, uri, received, ...}).
The catalog loads them once and validates a payload before it is published.

What happens to a bad payload depends on the mode:

- ``strict`` (tests, development): :class:`EventValidationError` is raised to the caller, so a
  service that raises a malformed event fails its tests;
- otherwise (production): the caller gets ``None`` back, the event is counted in
  ``invalid_total`` by the bus, and dropped - a bug in an event must never stop SIP service.

An unknown event name is treated like a payload that does not match: an event without a
contract is a bug too.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator

import contracts


def default_contracts_dir() -> Path:
    """``contracts/events`` of the installed (or editable) distribution."""
    return Path(contracts.__file__).resolve().parent / "events"


class EventValidationError(ValueError):
    """A payload does not match its event's contract (or the event has none)."""

    def __init__(self, event: str, message: str) -> None:
        super().__init__(f"{event}: {message}")
        self.event = event
        self.message = message


@dataclass(frozen=True, slots=True)
class EventContract:
    name: str
    description: str
    module: str
    schema: Mapping[str, Any]


class EventCatalog:
    """The events known to this process, each with a compiled validator."""

    def __init__(self, contracts_: Iterable[EventContract]) -> None:
        self._contracts = {c.name: c for c in contracts_}
        self._validators = {
            name: Draft202012Validator(c.schema) for name, c in self._contracts.items()
        }

    @classmethod
    def load(cls, directory: Path | None = None) -> EventCatalog:
        directory = directory or default_contracts_dir()
        found = []
        for path in sorted(directory.glob("E_*.json")):
            schema = json.loads(path.read_text(encoding="utf-8"))
            # Fail at start-up, not at the first publish, if a contract itself is broken.
            Draft202012Validator.check_schema(schema)
            found.append(
                EventContract(
                    name=path.stem,
                    description=str(schema.get("description", "")),
                    module=str(schema.get("x-opensips-module", "core")),
                    schema=schema,
                )
            )
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._contracts)

    def __contains__(self, name: object) -> bool:
        return name in self._contracts

    def contract(self, name: str) -> EventContract:
        return self._contracts[name]

    def validate(self, event: str, params: Mapping[str, Any]) -> None:
        """Raise :class:`EventValidationError` unless ``params`` matches ``event``'s schema."""
        validator = self._validators.get(event)
        if validator is None:
            raise EventValidationError(event, "unknown event (no contract in contracts/events)")
        error = next(iter(sorted(validator.iter_errors(params), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(params)"
            raise EventValidationError(event, f"{where}: {error.message}")
