"""One contract suite over the SIPREC recording store backends: SQLite (the embedded
default) and the real PostgreSQL of this machine (127.0.0.1:5432, database `test`); a
stored recording comes back as the same recording, able to send the same BYE."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from services.siprec.metadata import Participant
from services.siprec.session import Recording, RecordingError, State, Table
from services.siprec.store import (
    PostgresRecordingStore,
    RecordingStore,
    SQLiteRecordingStore,
    open_recording_store,
)

PG_DSN = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(params=["sqlite", "postgresql"])
async def store(request: pytest.FixtureRequest,
                tmp_path: Path) -> AsyncIterator[RecordingStore]:
    table = f"siprec_t{uuid.uuid4().hex[:10]}"  # parallel runs never share a table
    s: RecordingStore
    if request.param == "sqlite":
        s = SQLiteRecordingStore(tmp_path / "siprec.sqlite", table=table)
    else:
        s = PostgresRecordingStore(PG_DSN, table=table)
    await s.open()
    yield s
    if isinstance(s, PostgresRecordingStore):
        await s.pool.execute(f"DROP TABLE {table}")
    await s.close()


def _active() -> Recording:
    rec = Recording(call_id="c1", from_tag="ft", srs=("sip:a@h", "sip:b@h"),
                    caller=Participant("sip:alice@x", "Alice"),
                    callee=Participant("sip:bob@y"), group="g", instance="udp:1.2.3.4:2223",
                    started=100.0, state=State.ACTIVE, srs_index=1, subscription="sub",
                    labels=("1", "2"), rs_call_id="rs", local_tag="lt", remote_tag="rt",
                    remote_target="sip:srs@10.0.0.9", route_set=("<sip:p;lr>",), cseq=1,
                    contact="sip:src@edge", answered_at=101.5, tried=[("sip:a@h", 503)])
    return rec


async def test_a_stored_recording_comes_back_and_ends_the_same(store: RecordingStore) -> None:
    assert await store.all() == []
    rec = _active()
    await store.put("c1", rec.to_doc(), 1.0)
    await store.put("c1", rec.to_doc(), 2.0)  # replaced, not doubled
    docs = await store.all()
    assert len(docs) == 1
    back = Recording.from_doc(docs[0])
    assert back == rec
    assert Table().stop(back) == Table().stop(_active())  # the same BYE to the SRS
    await store.remove("c1")
    await store.remove("c1")  # idempotent
    assert await store.all() == []


def test_a_row_that_is_not_a_recording_is_refused() -> None:
    for doc in ({}, {"call_id": "c"}, {**_active().to_doc(), "state": "bogus"},
                {**_active().to_doc(), "srs": []}):
        with pytest.raises(RecordingError):
            Recording.from_doc(doc)


def test_locations() -> None:
    assert open_recording_store("none") is None
    assert isinstance(open_recording_store(PG_DSN), PostgresRecordingStore)
    assert isinstance(open_recording_store("/tmp/x.sqlite"), SQLiteRecordingStore)
