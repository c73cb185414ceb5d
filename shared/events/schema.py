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

Families: each contract names its family (``x-sipmesh-family``: ``usrloc``, ``clusterer``,
``core``, ``dialog``, ``acc``...), the one table of event name -> family. On RabbitMQ an
event travels with the routing key ``<family>.<EVENT_NAME>`` (:meth:`EventCatalog.
routing_key`), so a consumer binds a whole family (``usrloc.#``) or one event wherever it
comes from (``*.E_ACC_CDR``); AMQP topic words are dot-separated, so a flat name could only
be bound one by one.

Speed: ``publish`` sits on the SIP hot path and jsonschema takes ~50 us per payload. The
contracts only use a small set of keywords (flat objects of typed scalars with bounds), so
each schema is also compiled into a plain-Python checker (:class:`_FlatCheck`) that answers
"valid" in a few microseconds. It is conservative: it compiles only schemas made of the
keywords it knows, and whenever it says "invalid" jsonschema is asked again and has the
last word (and writes the error message). So the checker can cost speed, never correctness.
Start-up is kept cheap the same way: :func:`known_valid` proves a flat contract a valid schema
without jsonschema's metaschema walk, which checks only the others.
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
    family: str = "core"
    id: int = -1  # x-sipmesh-id: the event's id in events_list, fixed once released

    @property
    def routing_key(self) -> str:
        return f"{self.family}.{self.name}"


FAMILY = re.compile(r"[a-z][a-z0-9_]*")  # one AMQP topic word


_PROP_KEYS = {"type", "minimum", "maximum", "minLength", "pattern", "description"}
_TOP_KEYS = {"$schema", "$id", "title", "description", "x-opensips-module",
             "x-sipmesh-family", "x-sipmesh-id", "type", "properties", "required",
             "additionalProperties"}
_SCALARS = ("string", "integer", "number", "null", "boolean")
DRAFT = "https://json-schema.org/draft/2020-12/schema"
_ID = re.compile(r"sipmesh:events/E_[A-Z0-9_]+")


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def _value_expr(spec: Mapping[str, Any], consts: dict[str, Any]) -> str | None:
    """A Python expression over ``v`` that is true only when ``v`` is valid for ``spec``;
    None when ``spec`` uses anything this compiler does not know (no fast path then).

    Exact types (``type(v) is int``) rather than isinstance: bool is an int subclass but no
    JSON integer, and anything unusual (an int subclass, 1.0 for an integer) simply goes to
    jsonschema."""
    if not isinstance(spec, Mapping) or not set(spec) <= _PROP_KEYS or "type" not in spec:
        return None
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if not types or not all(isinstance(t, str) and t in _SCALARS for t in types):
        return None
    lo, hi, min_len = spec.get("minimum"), spec.get("maximum"), spec.get("minLength")
    if any(b is not None and not _is_number(b) for b in (lo, hi)):
        return None
    if min_len is not None and (not isinstance(min_len, int) or isinstance(min_len, bool)):
        return None
    bounds = "".join(f" and {c}" for c in (
        f"v >= {lo!r}" if lo is not None else "", f"v <= {hi!r}" if hi is not None else "")
        if c)
    alternatives = []
    for t in dict.fromkeys(types):
        if t == "string":
            expr = "type(v) is str"
            if min_len is not None:
                expr += f" and len(v) >= {min_len!r}"
            if "pattern" in spec:
                name = f"p{len(consts)}"
                consts[name] = re.compile(spec["pattern"])
                expr += f" and {name}.search(v) is not None"
        elif t == "integer":
            expr = "type(v) is int" + bounds
        elif t == "number":
            expr = "(type(v) is int or type(v) is float)" + bounds
        elif t == "null":
            expr = "v is None"
        else:
            expr = "type(v) is bool"
        alternatives.append(f"({expr})")
    return " or ".join(alternatives)


def _valid_flat_property(spec: Any) -> bool:
    """``spec`` is one property of the flat grammar (see :func:`known_valid`)."""
    if not isinstance(spec, Mapping) or not set(spec) <= _PROP_KEYS or "type" not in spec:
        return False
    types = spec["type"] if isinstance(spec["type"], list) else [spec["type"]]
    if not types or len(set(map(str, types))) != len(types) or \
            not all(isinstance(t, str) and t in _SCALARS for t in types):
        return False
    if any(k in spec and not _is_number(spec[k]) for k in ("minimum", "maximum")):
        return False
    min_len = spec.get("minLength", 0)
    if not isinstance(min_len, int) or isinstance(min_len, bool) or min_len < 0:
        return False
    if not isinstance(spec.get("description", ""), str):
        return False
    if "pattern" in spec:
        if not isinstance(spec["pattern"], str):
            return False
        try:
            re.compile(spec["pattern"])  # "format": "regex", as jsonschema checks it
        except re.error:
            return False
    return True


def known_valid(schema: Mapping[str, Any]) -> bool:
    """True when ``schema`` is made only of a flat grammar every instance of which is a
    valid Draft 2020-12 schema; False says nothing (``load`` asks jsonschema then).

    Why: ``Draft202012Validator.check_schema`` walks the whole 2020-12 metaschema, ~3 ms
    per contract, ~80 ms of CPU at every start of every process for contracts that are
    all flat objects of typed scalars. The grammar (each rule is the metaschema's for that
    keyword, or stricter): ``$schema`` is this draft; ``$id`` is ``sipmesh:events/E_...``
    (a URI reference without a fragment); ``title`` and ``description`` are strings;
    ``type`` is ``object``; ``properties`` maps names to properties; ``required`` is a
    list of distinct strings; ``additionalProperties`` is a boolean; the ``x-`` keywords
    of ``_TOP_KEYS`` are free (the metaschema ignores unknown keywords). A property has a
    ``type`` (a scalar type name or a non-empty list of distinct ones), numeric
    ``minimum``/``maximum``, a non-negative integer ``minLength``, a ``pattern`` Python's
    ``re`` compiles, a string ``description``, and nothing else."""
    if not set(schema) <= _TOP_KEYS or schema.get("type") != "object":
        return False
    if schema.get("$schema", DRAFT) != DRAFT:
        return False
    if "$id" in schema and not (isinstance(schema["$id"], str)
                                and _ID.fullmatch(schema["$id"])):
        return False
    if not all(isinstance(schema.get(k, ""), str) for k in ("title", "description")):
        return False
    if not isinstance(schema.get("additionalProperties", True), bool):
        return False
    required = schema.get("required", [])
    if not isinstance(required, list) or len(set(map(str, required))) != len(required) or \
            not all(isinstance(name, str) for name in required):
        return False
    props = schema.get("properties", {})
    return isinstance(props, Mapping) and all(
        isinstance(name, str) and _valid_flat_property(spec) for name, spec in props.items())


class _FlatCheck:
    """Fast "definitely valid" test for a flat object schema (see the module docstring).

    ``compile`` writes one Python function per schema (source built from the schema's
    keywords: property names and bounds as literals, patterns as precompiled objects) and
    compiles it once, so checking a payload is a straight run of inline comparisons rather
    than a loop over per-property closures."""

    def __init__(self, source: str, test: Callable[[Any], bool]) -> None:
        self.source = source  # kept for debugging: what the schema compiled to
        self._test = test

    @classmethod
    def compile(cls, schema: Mapping[str, Any]) -> _FlatCheck | None:
        if not set(schema) <= _TOP_KEYS or schema.get("type") != "object":
            return None
        props = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(props, Mapping) or not isinstance(required, list) or \
                not all(isinstance(name, str) for name in [*props, *required]):
            return None
        consts: dict[str, Any] = {}
        # Builtins bound as defaults: locals are the fastest names in CPython.
        lines = ["def check(params, type=type, len=len, isinstance=isinstance, dict=dict):",
                 "    if not isinstance(params, dict):",
                 "        return False"]
        for name in dict.fromkeys(required):
            if name not in props:
                lines += [f"    if {name!r} not in params:", "        return False"]
        lines.append("    try:")  # a required property missing: KeyError below
        for name, spec in props.items():
            expr = _value_expr(spec, consts)
            if expr is None:
                return None
            if name in required:
                lines += [f"        v = params[{name!r}]",
                          f"        if not ({expr}):", "            return False"]
            else:
                lines += [f"        if {name!r} in params:",
                          f"            v = params[{name!r}]",
                          f"            if not ({expr}):", "                return False"]
        lines += ["        pass", "    except KeyError:", "        return False"]
        additional = schema.get("additionalProperties", True)
        consts["known"] = frozenset(props)
        if additional is False:
            lines += ["    if not known.issuperset(params):", "        return False"]
        elif additional is not True:
            expr = _value_expr(additional, consts)
            if expr is None:
                return None
            lines += ["    for k, v in params.items():",
                      f"        if k not in known and not ({expr}):",
                      "            return False"]
        lines.append("    return True")
        source = "\n".join(lines) + "\n"
        namespace = dict(consts)
        # Only literals made by repr() (names, bounds) and the names in `consts` are in the
        # source: a schema cannot inject code.
        exec(compile(source, f"<event schema {schema.get('title', '?')}>", "exec"), namespace)
        return cls(source, namespace["check"])

    def __call__(self, params: Any) -> bool:
        return bool(self._test(params))


class EventCatalog:
    """The events known to this process, each with a compiled validator."""

    def __init__(self, contracts_: Iterable[EventContract]) -> None:
        self._contracts = {c.name: c for c in contracts_}
        self._keys = {name: c.routing_key for name, c in self._contracts.items()}
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
            # Fail at start-up, not at the first publish, if a contract itself is broken
            # (known_valid: most contracts are proven valid without jsonschema's walk).
            if not known_valid(schema):
                Draft202012Validator.check_schema(schema)
            family = schema.get("x-sipmesh-family")
            if not isinstance(family, str) or not FAMILY.fullmatch(family):
                raise ValueError(f"{path}: x-sipmesh-family must be one lowercase word, "
                                 f"not {family!r}")
            # The id events_list shows (OpenSIPS' event id). Written in the contract, not
            # derived from the name's place, so adding an event never renumbers others.
            event_id = schema.get("x-sipmesh-id")
            if isinstance(event_id, bool) or not isinstance(event_id, int) or event_id < 0:
                raise ValueError(f"{path}: x-sipmesh-id must be a non-negative integer, "
                                 f"not {event_id!r}")
            found.append(
                EventContract(
                    name=path.stem,
                    description=str(schema.get("description", "")),
                    module=str(schema.get("x-opensips-module", "core")),
                    schema=schema,
                    family=family,
                    id=event_id,
                )
            )
        seen: dict[int, str] = {}
        for c in found:
            if c.id in seen:
                raise ValueError(f"{directory}: x-sipmesh-id {c.id} is both {seen[c.id]} "
                                 f"and {c.name}")
            seen[c.id] = c.name
        return cls(found)

    def names(self) -> list[str]:
        return sorted(self._contracts)

    def event_id(self, name: str) -> int:
        """The event's stable id (its contract's ``x-sipmesh-id``); KeyError if unknown."""
        return self._contracts[name].id

    def routing_key(self, name: str) -> str:
        """``<family>.<name>``: the RabbitMQ routing key (and local listener key) of an
        event; a name without a contract keeps its bare name."""
        return self._keys.get(name, name)

    def family(self, name: str) -> str:
        return self._contracts[name].family

    def families(self) -> dict[str, list[str]]:
        """family -> its event names, sorted."""
        out: dict[str, list[str]] = {}
        for name in self.names():
            out.setdefault(self._contracts[name].family, []).append(name)
        return dict(sorted(out.items()))

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
