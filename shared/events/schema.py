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

Speed: ``publish`` sits on the SIP hot path and jsonschema takes ~50 us per payload. The
contracts only use a small set of keywords (flat objects of typed scalars with bounds), so
each schema is also compiled into a plain-Python checker (:class:`_FlatCheck`) that answers
"valid" in a few microseconds. It is conservative: it compiles only schemas made of the
keywords it knows, and whenever it says "invalid" jsonschema is asked again and has the
last word (and writes the error message). So the checker can cost speed, never correctness.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
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


_TYPES: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
    "null": lambda v: v is None,
    "boolean": lambda v: isinstance(v, bool),
}
_PROP_KEYS = {"type", "minimum", "maximum", "minLength", "pattern", "description"}
_TOP_KEYS = {"$schema", "$id", "title", "description", "x-opensips-module", "type",
             "properties", "required", "additionalProperties"}


def _value_check(spec: Mapping[str, Any]) -> Callable[[Any], bool] | None:
    if not set(spec) <= _PROP_KEYS or "type" not in spec:
        return None
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if not all(t in _TYPES for t in types):
        return None
    tests = [_TYPES[t] for t in types]
    lo, hi = spec.get("minimum"), spec.get("maximum")
    min_len = spec.get("minLength")
    pattern = re.compile(spec["pattern"]) if "pattern" in spec else None

    def check(v: Any) -> bool:
        if not any(t(v) for t in tests):
            return False
        if isinstance(v, int | float) and not isinstance(v, bool):
            if (lo is not None and v < lo) or (hi is not None and v > hi):
                return False
        if isinstance(v, str):
            if min_len is not None and len(v) < min_len:
                return False
            if pattern is not None and not pattern.search(v):
                return False
        return True

    return check


class _FlatCheck:
    """Fast "definitely valid" test for a flat object schema (see the module docstring)."""

    def __init__(self, props: dict[str, Callable[[Any], bool]], required: list[str],
                 extra: Callable[[Any], bool] | None) -> None:
        self.props, self.required, self.extra = props, required, extra

    @classmethod
    def compile(cls, schema: Mapping[str, Any]) -> _FlatCheck | None:
        if not set(schema) <= _TOP_KEYS or schema.get("type") != "object":
            return None
        props: dict[str, Callable[[Any], bool]] = {}
        for name, spec in schema.get("properties", {}).items():
            check = _value_check(spec)
            if check is None:
                return None
            props[name] = check
        additional = schema.get("additionalProperties", True)
        extra: Callable[[Any], bool] | None
        if additional is False:
            extra = None
        elif additional is True:
            extra = lambda v: True  # noqa: E731
        else:
            extra = _value_check(additional)
            if extra is None:
                return None
        return cls(props, list(schema.get("required", [])), extra)

    def __call__(self, params: Any) -> bool:
        if not isinstance(params, dict):
            return False
        for name in self.required:
            if name not in params:
                return False
        for name, value in params.items():
            check = self.props.get(name, self.extra)
            if check is None or not check(value):
                return False
        return True


class EventCatalog:
    """The events known to this process, each with a compiled validator."""

    def __init__(self, contracts_: Iterable[EventContract]) -> None:
        self._contracts = {c.name: c for c in contracts_}
        self._validators = {
            name: Draft202012Validator(c.schema) for name, c in self._contracts.items()
        }
        self._fast = {name: _FlatCheck.compile(c.schema) for name, c in self._contracts.items()}

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
        fast = self._fast[event]
        if fast is not None and fast(params):
            return
        error = next(iter(sorted(validator.iter_errors(params), key=lambda e: list(e.path))), None)
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(params)"
            raise EventValidationError(event, f"{where}: {error.message}")
