"""The compatibility gate: today's contracts against the last released snapshot.

``contracts/released/<version>/`` holds each released version's contracts as they were
(``proto/``, ``mi/``, ``events/``: copies of the source files). ``python -m contracts.compat``
compares the current ``contracts/`` with the newest snapshot and exits 1 listing every
change that would break a peer still on that release (docs/adr/0002-versioning.md):

* gRPC (both ``.proto`` trees compiled by protoc into descriptors, compared by full name
  and field number): a removed message, enum, enum value, service or RPC; a field removed,
  renumbered or renamed, its type or label changed; an RPC's request/response type or
  streaming changed;
* MI (``contracts/mi/<method>.json``) and events (``contracts/events/<event>.json``): a
  removed method or event; in what a caller sends (MI ``params``), a parameter removed, a
  new required one, a type narrowed, an enum value removed, fewer positional parameters;
  in what a reader receives (MI ``result``, event fields), a field removed or no longer
  required, a type widened, an enum value or a ``oneOf`` alternative added.

Additions (new fields, RPCs, methods, events, optional parameters) pass. A break is allowed
only when :data:`contracts.CONTRACTS_VERSION` moved to a new major (then the breaks are
printed as accepted). ``--snapshot X.Y.Z`` records the current contracts as release X.Y.Z.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from contracts import CONTRACTS_VERSION

HERE = Path(__file__).resolve().parent
RELEASED = HERE / "released"
KINDS = ("proto", "mi", "events")
IN, OUT = "in", "out"  # what a caller sends / what a reader receives


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in version.split("."))


def latest_release(released: Path = RELEASED) -> Path | None:
    versions = [p for p in released.iterdir() if p.is_dir() and _is_version(p.name)] \
        if released.is_dir() else []
    return max(versions, key=lambda p: version_key(p.name), default=None)


def _is_version(name: str) -> bool:
    parts = name.split(".")
    return len(parts) == 3 and all(p.isdigit() for p in parts)


# -- gRPC ---------------------------------------------------------------------------------
def descriptors(proto_root: Path) -> Any:
    """The FileDescriptorSet of every ``.proto`` under ``proto_root`` (protoc, in-process)."""
    import grpc_tools
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    protos = sorted(str(p.relative_to(proto_root)) for p in proto_root.rglob("*.proto"))
    fds = descriptor_pb2.FileDescriptorSet()
    if not protos:
        return fds
    include = Path(grpc_tools.__file__).parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.pb"
        args = ["grpc_tools.protoc", f"-I{proto_root}", f"-I{include}",
                f"--descriptor_set_out={out}", *protos]
        if protoc.main(args) != 0:
            raise SystemExit(f"protoc failed on {proto_root}")
        fds.ParseFromString(out.read_bytes())
    return fds


def _index(fds: Any) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
    messages: dict[str, Any] = {}
    enums: dict[str, Any] = {}
    services: dict[str, Any] = {}

    def walk(prefix: str, msgs: Iterable[Any], ens: Iterable[Any]) -> None:
        for enum in ens:
            enums[f"{prefix}.{enum.name}"] = enum
        for msg in msgs:
            name = f"{prefix}.{msg.name}"
            messages[name] = msg
            walk(name, msg.nested_type, msg.enum_type)

    for f in fds.file:
        walk(f.package, f.message_type, f.enum_type)
        for svc in f.service:
            services[f"{f.package}.{svc.name}"] = svc
    return messages, enums, services


def _field_kind(field: Any) -> str:
    from google.protobuf import descriptor_pb2

    kind = descriptor_pb2.FieldDescriptorProto.Type.Name(field.type).removeprefix("TYPE_")
    label = descriptor_pb2.FieldDescriptorProto.Label.Name(field.label).removeprefix("LABEL_")
    target = f" {field.type_name.lstrip('.')}" if field.type_name else ""
    return f"{label.lower()} {kind.lower()}{target}"


def proto_breaks(old: Any, new: Any) -> list[str]:
    """Breaking changes between two FileDescriptorSets (see the module docstring)."""
    breaks: list[str] = []
    old_msgs, old_enums, old_svcs = _index(old)
    new_msgs, new_enums, new_svcs = _index(new)
    for name, msg in old_msgs.items():
        now = new_msgs.get(name)
        if now is None:
            breaks.append(f"proto: message {name} removed")
            continue
        by_number = {f.number: f for f in now.field}
        by_name = {f.name: f for f in now.field}
        for field in msg.field:
            same = by_number.get(field.number)
            if same is None:
                moved = by_name.get(field.name)
                if moved is not None:
                    breaks.append(f"proto: field {name}.{field.name} renumbered "
                                  f"{field.number} -> {moved.number}")
                else:
                    breaks.append(f"proto: field {name}.{field.name} = {field.number} removed")
                continue
            if same.name != field.name:
                breaks.append(f"proto: field {name} #{field.number} renamed "
                              f"{field.name} -> {same.name}")
            if _field_kind(same) != _field_kind(field):
                breaks.append(f"proto: field {name}.{field.name} changed type "
                              f"{_field_kind(field)} -> {_field_kind(same)}")
    for name, enum in old_enums.items():
        now = new_enums.get(name)
        if now is None:
            breaks.append(f"proto: enum {name} removed")
            continue
        values = {v.name: v.number for v in now.value}
        for value in enum.value:
            if value.name not in values:
                breaks.append(f"proto: enum value {name}.{value.name} removed")
            elif values[value.name] != value.number:
                breaks.append(f"proto: enum value {name}.{value.name} renumbered "
                              f"{value.number} -> {values[value.name]}")
    for name, svc in old_svcs.items():
        now = new_svcs.get(name)
        if now is None:
            breaks.append(f"proto: service {name} removed")
            continue
        methods = {m.name: m for m in now.method}
        for method in svc.method:
            same = methods.get(method.name)
            if same is None:
                breaks.append(f"proto: rpc {name}/{method.name} removed")
                continue
            for attr in ("input_type", "output_type", "client_streaming", "server_streaming"):
                if getattr(same, attr) != getattr(method, attr):
                    breaks.append(f"proto: rpc {name}/{method.name} changed {attr} "
                                  f"{getattr(method, attr)!s} -> {getattr(same, attr)!s}")
    return breaks


# -- JSON Schemas (MI methods, events) ------------------------------------------------------
def _types(schema: Any) -> set[str] | None:
    if not isinstance(schema, dict) or "type" not in schema:
        return None  # unconstrained here
    kind = schema["type"]
    types = set(kind) if isinstance(kind, list) else {kind}
    if "integer" in types and "number" not in types:
        return types
    return types | ({"integer"} if "number" in types else set())


def schema_breaks(old: Any, new: Any, where: str, direction: str) -> Iterator[str]:
    """Breaking differences between two JSON Schemas of one value; ``direction`` IN for
    what a caller sends (the new schema must accept all the old accepted), OUT for what a
    reader receives (the new must produce nothing the old could not)."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return
    old_t, new_t = _types(old), _types(new)
    if old_t is not None or new_t is not None:
        if direction == IN and new_t is not None and (old_t is None or not old_t <= new_t):
            yield f"{where}: type narrowed {sorted(old_t or ['any'])} -> {sorted(new_t)}"
        if direction == OUT and old_t is not None and (new_t is None or not new_t <= old_t):
            yield f"{where}: type widened {sorted(old_t)} -> {sorted(new_t or ['any'])}"
    if "enum" in old or "enum" in new:
        old_e, new_e = old.get("enum"), new.get("enum")
        if direction == IN and new_e is not None:
            lost = [v for v in (old_e or []) if v not in new_e]
            if old_e is None or lost:
                yield f"{where}: enum values no longer accepted {lost or 'any'}"
        if direction == OUT and old_e is not None:
            added = [v for v in (new_e or []) if v not in old_e]
            if new_e is None or added:
                yield f"{where}: new enum values {added or 'any'}"
    old_p, new_p = old.get("properties", {}), new.get("properties", {})
    old_req, new_req = set(old.get("required", [])), set(new.get("required", []))
    for name, sub in old_p.items():
        if name not in new_p:
            yield f"{where}: field {name!r} removed"
            continue
        yield from schema_breaks(sub, new_p[name], f"{where}.{name}", direction)
    if direction == IN:
        for name in sorted(new_req - old_req):
            yield f"{where}: field {name!r} became required"
        if old.get("additionalProperties", True) is not False and \
                new.get("additionalProperties", True) is False:
            yield f"{where}: no longer accepts other fields"
        if new.get("maxProperties", 10**9) < old.get("maxProperties", 10**9):
            yield f"{where}: at most {new['maxProperties']} fields"
        if new.get("maxItems", 10**9) < old.get("maxItems", 10**9):
            yield f"{where}: at most {new['maxItems']} items (was {old.get('maxItems')})"
        if new.get("minItems", 0) > old.get("minItems", 0):
            yield f"{where}: at least {new['minItems']} items (was {old.get('minItems', 0)})"
    else:
        for name in sorted(old_req - new_req):
            yield f"{where}: field {name!r} no longer always present"
    if "items" in old and "items" in new:
        yield from schema_breaks(old["items"], new["items"], f"{where}[]", direction)
    for key in ("oneOf", "anyOf"):
        old_alt, new_alt = old.get(key), new.get(key)
        if old_alt is None and new_alt is None:
            continue
        old_alt, new_alt = old_alt or [], new_alt or []
        for i, (a, b) in enumerate(zip(old_alt, new_alt, strict=False)):
            yield from schema_breaks(a, b, f"{where}.{key}[{i}]", direction)
        if direction == IN and len(new_alt) < len(old_alt):
            yield f"{where}: {key} lost {len(old_alt) - len(new_alt)} accepted form(s)"
        if direction == OUT and len(new_alt) > len(old_alt):
            yield f"{where}: {key} gained {len(new_alt) - len(old_alt)} form(s)"


def _schemas(directory: Path) -> dict[str, Any]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(directory.glob("*.json"))} \
        if directory.is_dir() else {}


def json_breaks(old_root: Path, new_root: Path) -> list[str]:
    breaks: list[str] = []
    old_mi, new_mi = _schemas(old_root / "mi"), _schemas(new_root / "mi")
    for method, schema in old_mi.items():
        now = new_mi.get(method)
        if now is None:
            breaks.append(f"mi: method {method} removed")
            continue
        breaks += schema_breaks(schema.get("params"), now.get("params"),
                                f"mi: {method} params", IN)
        breaks += schema_breaks(schema.get("result"), now.get("result"),
                                f"mi: {method} result", OUT)
    old_ev, new_ev = _schemas(old_root / "events"), _schemas(new_root / "events")
    for event, schema in old_ev.items():
        now = new_ev.get(event)
        if now is None:
            breaks.append(f"events: {event} removed")
            continue
        breaks += schema_breaks(schema, now, f"events: {event}", OUT)
    return breaks


# -- the gate -------------------------------------------------------------------------------
def compare(released: Path, current: Path = HERE) -> list[str]:
    """Every breaking change from the snapshot ``released`` to the contracts ``current``
    (a directory holding ``proto/``, ``mi/``, ``events/``)."""
    return proto_breaks(descriptors(released / "proto"), descriptors(current / "proto")) \
        + json_breaks(released, current)


def gate(released: Path, current: Path = HERE, version: str = CONTRACTS_VERSION
         ) -> tuple[bool, list[str]]:
    """(passes, breaks): breaks pass only when ``version`` is a new major."""
    breaks = compare(released, current)
    major_bump = version_key(version)[0] > version_key(released.name)[0]
    return (not breaks or major_bump), breaks


def snapshot(version: str, current: Path = HERE, released: Path = RELEASED) -> Path:
    """Copies the current contracts to ``released/<version>/`` (a release's record)."""
    if not _is_version(version):
        raise SystemExit(f"not a MAJOR.MINOR.PATCH version: {version!r}")
    target = released / version
    if target.exists():
        raise SystemExit(f"{target} exists: a released snapshot is never rewritten")
    for kind in KINDS:
        shutil.copytree(current / kind, target / kind,
                        ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", type=Path, help="a snapshot (default: the newest)")
    parser.add_argument("--current", type=Path, default=HERE,
                        help="the contracts to check (default: contracts/)")
    parser.add_argument("--version", default=CONTRACTS_VERSION,
                        help="the current contracts version (default: CONTRACTS_VERSION)")
    parser.add_argument("--snapshot", metavar="X.Y.Z",
                        help="record the current contracts as release X.Y.Z and exit")
    args = parser.parse_args(argv)
    if args.snapshot:
        print(f"snapshot {snapshot(args.snapshot, args.current)}")
        return 0
    released = args.against or latest_release()
    if released is None:
        print("no released contracts to compare with (contracts/released/ is empty)")
        return 0
    ok, breaks = gate(released, args.current, args.version)
    for line in breaks:
        print(("accepted (new major) " if ok else "BREAKING ") + line,
              file=sys.stdout if ok else sys.stderr)
    if ok:
        print(f"contracts {args.version} compatible with released {released.name}"
              + (f" ({len(breaks)} break(s) accepted by the major bump)" if breaks else ""))
        return 0
    print(f"contracts {args.version} break released {released.name}: {len(breaks)} "
          "change(s); make them additive, or move to a new major (v2)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
