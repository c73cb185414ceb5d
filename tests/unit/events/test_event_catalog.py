"""The event contracts: every schema is valid, OpenSIPS names and parameters, validation."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.events.schema import EventCatalog, EventValidationError

CONTACT = {
    "aor": "alice@example.com", "uri": "sip:alice@10.0.0.5:5060", "received": "",
    "path": "", "qval": 10, "socket": "udp:10.0.0.1:5060", "bflags": 0,
    "expires": 1_800_000_000, "callid": "abc@10.0.0.5", "cseq": 7, "attr": "", "latency": 0,
}
DLG = {"hash_entry": 12, "hash_id": 3456, "callid": "c1", "from_tag": "f1", "to_tag": "t1",
       "old_state": 1, "new_state": 4}
CDR = {"method": "INVITE", "from_tag": "f", "to_tag": "t", "callid": "c", "sip_code": "200",
       "sip_reason": "OK", "time": 1_800_000_000, "duration": 61, "ms_duration": 61_250,
       "setuptime": 3, "created": 1_799_999_997}

GOOD: dict[str, dict[str, Any]] = {
    "E_UL_AOR_INSERT": {"aor": "alice@example.com"},
    "E_UL_AOR_DELETE": {"aor": "alice@example.com"},
    "E_UL_CONTACT_INSERT": CONTACT,
    "E_UL_CONTACT_UPDATE": CONTACT,
    "E_UL_CONTACT_DELETE": CONTACT,
    "E_UL_LATENCY_UPDATE": {**CONTACT, "latency": 2300},
    "E_DLG_STATE_CHANGED": DLG,
    "E_ACC_CDR": {**CDR, "src_user": "alice", "dst_user": "bob"},
    "E_CORE_THRESHOLD": {"source": "msg processing", "time": 250_000, "extra": "INVITE sip:b"},
    "E_CORE_SHM_THRESHOLD": {"usage": 91, "threshold": 90, "used": 910, "size": 1000},
    "E_CORE_PKG_THRESHOLD": {"usage": 91, "threshold": 90, "used": 910, "size": 1000,
                             "pid": 4242},
    "E_CORE_TM_REPLICATION_FAILED": {"node": 2, "kind": "reply", "callid": "c1",
                                     "reason": "unreachable"},
}


_CATALOG = EventCatalog.load()


@pytest.fixture(scope="module")
def catalog() -> EventCatalog:
    return EventCatalog.load()


def test_catalog_has_the_opensips_events(catalog: EventCatalog) -> None:
    assert set(GOOD) <= set(catalog.names())
    assert catalog.contract("E_UL_CONTACT_INSERT").module == "usrloc"
    assert catalog.contract("E_DLG_STATE_CHANGED").module == "dialog"


@pytest.mark.parametrize("name", sorted(GOOD))
def test_a_well_formed_payload_passes(catalog: EventCatalog, name: str) -> None:
    catalog.validate(name, GOOD[name])


@pytest.mark.parametrize(
    ("name", "params", "where"),
    [
        ("E_UL_CONTACT_INSERT", {k: v for k, v in CONTACT.items() if k != "aor"}, "aor"),
        ("E_UL_CONTACT_INSERT", {**CONTACT, "qval": 11}, "qval"),
        ("E_UL_CONTACT_INSERT", {**CONTACT, "expires": "soon"}, "expires"),
        ("E_UL_AOR_INSERT", {"aor": "a@b", "surprise": 1}, "surprise"),
        ("E_DLG_STATE_CHANGED", {**DLG, "new_state": 6}, "new_state"),
        ("E_ACC_CDR", {**CDR, "sip_code": "2000"}, "sip_code"),
    ],
)
def test_a_malformed_payload_is_refused_with_the_reason(
    catalog: EventCatalog, name: str, params: dict[str, object], where: str
) -> None:
    with pytest.raises(EventValidationError) as info:
        catalog.validate(name, params)
    assert info.value.event == name
    assert where in str(info.value)


def test_an_event_without_contract_is_refused(catalog: EventCatalog) -> None:
    with pytest.raises(EventValidationError, match="unknown event"):
        catalog.validate("E_NO_SUCH_THING", {})


_values = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 2_000_000_000), st.floats(allow_nan=False),
    st.text(max_size=6), st.sampled_from(["200", "2000", "", "E", "sip:x"]),
)


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(sorted(GOOD)), data=st.data())
def test_fast_checker_never_accepts_what_jsonschema_rejects(
    name: str, data: st.DataObject
) -> None:
    cat = _CATALOG
    base = dict(GOOD[name])
    keys = [*base, "extra_key"]
    for key in data.draw(st.lists(st.sampled_from(keys), max_size=4)):
        if data.draw(st.booleans()):
            base[key] = data.draw(_values)
        else:
            base.pop(key, None)
    fast = cat._fast[name]
    assert fast is not None
    jsonschema_ok = cat._validators[name].is_valid(base)
    if fast(base):
        assert jsonschema_ok, base
    # and the public answer is always jsonschema's
    try:
        cat.validate(name, base)
        ok = True
    except EventValidationError:
        ok = False
    assert ok is jsonschema_ok


_SYNTHETIC = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 2, "pattern": "^[a-z]+$"},
        "count": {"type": "integer", "minimum": 0, "maximum": 9},
        "ratio": {"type": ["number", "null"], "maximum": 1.5},
        "flag": {"type": "boolean"},
    },
    "required": ["name"],
    "additionalProperties": {"type": "integer"},
}


@pytest.mark.parametrize(
    ("params", "fast_ok"),
    [
        ({"name": "ab"}, True),  # optional properties may be absent
        ({"name": "ab", "count": 9, "ratio": None, "flag": False, "x": 3}, True),
        ({"name": "ab", "ratio": 1.5}, True),
        ({"count": 1}, False),  # required missing
        ({"name": "a"}, False),  # minLength
        ({"name": "AB"}, False),  # pattern
        ({"name": "ab", "count": True}, False),  # a bool is no JSON integer
        ({"name": "ab", "count": 10}, False),  # maximum
        ({"name": "ab", "ratio": 2}, False),
        ({"name": "ab", "flag": 1}, False),
        ({"name": "ab", "x": "three"}, False),  # additionalProperties schema
        (["name"], False),  # not an object
    ],
)
def test_compiled_fast_check_agrees_with_jsonschema(params: object, fast_ok: bool) -> None:
    from jsonschema import Draft202012Validator

    from shared.events.schema import _FlatCheck

    fast = _FlatCheck.compile(_SYNTHETIC)
    assert fast is not None
    assert fast(params) is fast_ok
    assert Draft202012Validator(_SYNTHETIC).is_valid(params) is fast_ok


def test_fast_check_is_conservative_about_unusual_values() -> None:
    """An int subclass or 1.0 for an integer is not decided by the fast check; the catalog
    asks jsonschema, which accepts both."""
    from shared.events.schema import _FlatCheck

    class Count(int):
        pass

    fast = _FlatCheck.compile(_SYNTHETIC)
    assert fast is not None
    assert not fast({"name": "ab", "count": Count(3)})
    assert not fast({"name": "ab", "count": 3.0})
    _CATALOG.validate("E_UL_CONTACT_INSERT", {**CONTACT, "cseq": Count(7)})
    _CATALOG.validate("E_UL_CONTACT_INSERT", {**CONTACT, "cseq": 7.0})


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"a": {"type": "string", "format": "uri"}}},
    {"type": "object", "properties": {"a": {"type": "array"}}},
    {"type": "object", "properties": {"a": {"type": "integer", "minimum": "0"}}},
    {"type": "object", "properties": {"a": {"type": "string"}}, "oneOf": []},
    {"type": "array"},
])
def test_fast_check_is_not_compiled_for_keywords_it_does_not_know(
        schema: dict[str, Any]) -> None:
    from shared.events.schema import _FlatCheck

    assert _FlatCheck.compile(schema) is None


def test_every_usrloc_contract_has_a_fast_check() -> None:
    names = [n for n in _CATALOG.names() if n.startswith("E_UL_")]
    assert names and all(_CATALOG._fast[n] is not None for n in names)
