"""`sipmesh import opensips --db URL` against real OpenSIPS 2.4 databases.

Each run creates a database of its own on this machine's MariaDB (root, no password) and
PostgreSQL, with the tables OpenSIPS 2.4 creates (fixtures/, from its published schema)
and rows as OpenSIPS writes them: subscribers with plaintext passwords and with MD5 HA1s
only, live, permanent, expired and domain-less registrations, trusted addresses and
dispatcher sets. The command is run as a user runs it; the rows must land in SipMesh's
stores, a second run must add nothing, and the result must work: a registrar started on
the imported store loads the registrations, and sipp phones register with digest through
a real edge with the imported credentials. Pointing SipMesh's own store at the OpenSIPS
database gives one line naming the import command, never a traceback.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import re
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pymysql
import pytest

from services.registrar.subscribers import SQLiteSubscribers
from shared.store.edge_tables import Address, Destination, SQLiteAddresses, SQLiteDispatcher
from tests.integration.edge.edge_harness import free_port, start_edge, summary
from tests.integration.registrar.harness import ROOT, start_registrar
from tests.integration.registrar.test_registrar_sipp import mi, register

FIXTURES = Path(__file__).resolve().parent / "fixtures"
PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
BOB_HA1 = hashlib.md5(b"bob:127.0.0.1:bob-pw").hexdigest()
SUBSCRIBERS = [  # username, domain, password, ha1
    ("alice", "127.0.0.1", "alice-pw", ""),
    ("bob", "127.0.0.1", "", BOB_HA1),
    ("carol", "example.com", "", ""),
]
# When each database's rows were written (URL -> unix time): their expiries count from
# then, not from when the module was collected (a full run on a loaded machine reaches
# these tests many minutes later: frank's 600 s once ran out before his import).
WRITTEN_AT: dict[str, int] = {}


def locations(now: int) -> list[tuple[object, ...]]:
    """username, domain, contact, expires, q, callid, cseq, path, cflags, ua."""
    return [
        ("alice", "127.0.0.1", "sip:alice@192.0.2.10:5060", now + 3600, 0.5, "c-alice", 7,
         None, "NAT", "Yealink SIP-T46S"),
        ("dave", "127.0.0.1", "sip:dave@192.0.2.11:5062", 0, 1.0, "c-dave", 2,
         "<sip:p1.example.com;lr>,<sip:p2.example.com;lr>", None, "Linphone"),
        ("erin", "127.0.0.1", "sip:erin@192.0.2.12", now - 10, 1.0, "c-erin", 1, None, None,
         ""),
        ("frank", None, "sip:frank@192.0.2.13", now + 600, 1.0, "c-frank", 1, None, None,
         ""),
    ]


ADDRESSES = [  # grp, ip, mask, port, proto, pattern, context_info
    (1, "10.0.0.0", 8, 0, "any", None, "office"),
    (2, "192.0.2.7", 32, 5060, "udp", "^sip:.*@example.com$", None),
    (3, "198.51.100.1", 32, 0, "xyz", None, None),
]
DISPATCHER = [  # setid, destination, socket, state, weight, priority, attrs, description
    (1, "sip:gw1.example.com", None, 0, "1", 0, "", "primary"),
    (1, "sip:gw2.example.com:5080", "udp:192.0.2.1:5060", 0, "3", 5, "carrier=b", "backup"),
    (2, "sip:fs.example.com", None, 1, "fs://:ClueCon@127.0.0.1:8021", 0, "", ""),
]


def inserts(now: int) -> tuple[tuple[str, list[Any]], ...]:
    return (
        ("INSERT INTO subscriber (username, domain, password, ha1) VALUES ({})",
         SUBSCRIBERS),
        ("INSERT INTO location (username, domain, contact, expires, q, callid, cseq, path, "
         "cflags, user_agent) VALUES ({})", locations(now)),
        ("INSERT INTO address (grp, ip, mask, port, proto, pattern, context_info) VALUES "
         "({})", ADDRESSES),
        ("INSERT INTO dispatcher (setid, destination, socket, state, weight, priority, "
         "attrs, description) VALUES ({})", DISPATCHER),
    )


def statements(path: Path) -> list[str]:
    text = "\n".join(line for line in path.read_text().splitlines()
                     if not line.startswith("--"))
    return [s.strip() for s in text.split(";") if s.strip()]


def mysql_database(name: str, now: int) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"CREATE DATABASE {name}")
        cur.execute(f"USE {name}")
        for sql in statements(FIXTURES / "opensips24-mysql.sql"):
            cur.execute(sql)
        for sql, rows in inserts(now):
            cur.executemany(sql.format(", ".join(["%s"] * len(rows[0]))), rows)
    conn.close()


def mysql_drop(name: str) -> None:
    conn = pymysql.connect(host="127.0.0.1", port=3306, user="root", password="",
                           autocommit=True)
    with conn.cursor() as cur:
        cur.execute(f"DROP DATABASE IF EXISTS {name}")
    conn.close()


async def pg_database(name: str, now: int) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"CREATE DATABASE {name}")
    await admin.close()
    conn = await asyncpg.connect(PG_ADMIN.rsplit("/", 1)[0] + f"/{name}")
    try:
        await conn.execute((FIXTURES / "opensips24-postgres.sql").read_text())
        for sql, rows in inserts(now):
            marks = ", ".join(f"${i + 1}" for i in range(len(rows[0])))
            await conn.executemany(sql.format(marks), rows)
    finally:
        await conn.close()


async def pg_drop(name: str) -> None:
    admin = await asyncpg.connect(PG_ADMIN)
    await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    await admin.close()


@pytest.fixture(scope="module", params=["mysql", "postgresql"])
def opensips_db(request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"opensips_{uuid.uuid4().hex[:10]}"
    now = int(time.time())
    if request.param == "mysql":
        mysql_database(name, now)
        url = f"mysql://root@127.0.0.1:3306/{name}"
        WRITTEN_AT[url] = now
        yield url
        mysql_drop(name)
    else:
        asyncio.run(pg_database(name, now))
        url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
        WRITTEN_AT[url] = now
        yield url
        asyncio.run(pg_drop(name))


def sipmesh(*args: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env["XDG_STATE_HOME"] = str(tmp / "state")
    env["COLUMNS"] = "200"
    return subprocess.run([sys.executable, "-m", "sipmesh.cli.main", *args], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=120)


def row_of(output: str, table: str) -> list[str]:
    found = re.search(rf"^\s*{table}\s+(\d+)\s+(\d+)\s+(\d+)(.*)$", output, re.M)
    assert found, output
    return [found.group(1), found.group(2), found.group(3), found.group(4)]


@pytest.fixture(scope="module")
def imported(opensips_db: str, tmp_path_factory: pytest.TempPathFactory
             ) -> tuple[Path, subprocess.CompletedProcess[str]]:
    tmp = tmp_path_factory.mktemp("import")
    store = tmp / "subscribers.sqlite"
    done = sipmesh("import", "opensips", "--db", opensips_db, "--store", str(store), tmp=tmp)
    print(done.stdout)
    assert done.returncode == 0, done.stderr
    return store, done


def test_the_summary_says_what_came_over_and_what_did_not(
        imported: tuple[Path, subprocess.CompletedProcess[str]], opensips_db: str) -> None:
    _, done = imported
    out = done.stdout
    assert "reading " in out and "root@" not in out  # no credentials echoed
    assert row_of(out, "subscriber")[:3] == ["3", "2", "1"]
    assert "neither a password nor an MD5 ha1" in row_of(out, "subscriber")[3]
    assert "1 hashed from password" in out and "1 MD5 HA1 only" in out
    location = row_of(out, "location")
    assert location[:3] == ["4", "2", "2"]
    assert "1 expired" in location[3] and "use_domain" in location[3]
    assert row_of(out, "address")[:3] == ["3", "2", "1"]
    assert "unknown proto 'xyz'" in row_of(out, "address")[3]
    assert row_of(out, "dispatcher")[:3] == ["3", "3", "0"]
    assert "not a number" in out and "ClueCon" not in out
    assert "Traceback" not in done.stderr


async def test_records_land_in_sipmesh_stores(
        imported: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    store, _ = imported
    subscribers = SQLiteSubscribers(store)
    await subscribers.open()
    try:
        alice = await subscribers.get("alice", "127.0.0.1")
        bob = await subscribers.get("bob", "127.0.0.1")
        assert alice is not None and bob is not None
        assert alice.ha1 == hashlib.md5(b"alice:127.0.0.1:alice-pw").hexdigest()
        assert alice.ha1_sha256 == hashlib.sha256(b"alice:127.0.0.1:alice-pw").hexdigest()
        assert (bob.ha1, bob.ha1_sha256) == (BOB_HA1, "")
        assert await subscribers.get("carol", "example.com") is None
        assert await subscribers.count() == 2
    finally:
        await subscribers.close()
    addresses = SQLiteAddresses(str(store))
    dispatcher = SQLiteDispatcher(str(store))
    await addresses.open()
    await dispatcher.open()
    try:
        assert await addresses.all() == [
            Address(1, "10.0.0.0", 8, 0, "any", "", "office"),
            Address(2, "192.0.2.7", 32, 5060, "udp", "^sip:.*@example.com$", "")]
        assert await dispatcher.all() == [
            Destination(1, "sip:gw2.example.com:5080", "udp:192.0.2.1:5060", 0, 3, 5,
                        "carrier=b", "backup"),
            Destination(1, "sip:gw1.example.com", "", 0, 1, 0, "", "primary"),
            Destination(2, "sip:fs.example.com", "", 1, 1, 0, "", "")]
    finally:
        await addresses.close()
        await dispatcher.close()
    with sqlite3.connect(store) as db:
        assert sorted(r[0] for r in db.execute("SELECT aor FROM location")) == [
            "alice@127.0.0.1", "dave@127.0.0.1"]


def test_a_second_run_adds_nothing(imported: tuple[Path, subprocess.CompletedProcess[str]],
                                   opensips_db: str, tmp_path: Path) -> None:
    store, _ = imported
    again = sipmesh("import", "opensips", "--db", opensips_db, "--store", str(store),
                    tmp=tmp_path)
    assert again.returncode == 0, again.stderr
    with sqlite3.connect(store) as db:
        counts = [db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("subscriber", "location", "address", "dispatcher")]
    assert counts == [2, 2, 2, 3]


def test_domain_less_rows_take_the_given_domain(opensips_db: str, tmp_path: Path) -> None:
    store = tmp_path / "s.sqlite"
    done = sipmesh("import", "opensips", "--db", opensips_db, "--store", str(store),
                   "--table", "location", "--domain", "127.0.0.1", tmp=tmp_path)
    assert done.returncode == 0, done.stderr
    assert row_of(done.stdout, "location")[:3] == ["4", "3", "1"]
    assert re.search(r"^\s*subscriber\s", done.stdout, re.M) is None


@pytest.mark.peers
def test_imported_phones_register_and_bindings_load(
        imported: tuple[Path, subprocess.CompletedProcess[str]], opensips_db: str,
        tmp_path: Path) -> None:
    """The user's path: a registrar on the imported store, default configuration, lists
    the imported bindings, and phones register with their OpenSIPS credentials."""
    store, _ = imported
    reg = start_registrar(store)
    edge = start_edge({"SIPMESH_EDGE_REGISTRAR": reg.grpc})
    try:
        [dave] = mi(reg.mi, "ul_show_contact", ["location", "dave@127.0.0.1"]
                    )["result"]["Contacts"]
        assert dave["Contact"] == "sip:dave@192.0.2.11:5062"
        assert dave["Path"] == "<sip:p1.example.com;lr>,<sip:p2.example.com;lr>"
        assert dave["Expires"] == "permanent" and dave["User-agent"] == "Linphone"
        asked = time.time()
        [alice] = mi(reg.mi, "ul_show_contact", ["location", "alice@127.0.0.1"]
                     )["result"]["Contacts"]
        answered = time.time()
        assert alice["Callid"] == "c-alice" and alice["Q"] == "0.5" and alice["Cseq"] == 7
        # Seconds left when the registrar answered, somewhere between the two clocks (a
        # slow MI answer on a loaded box widens the window by exactly its own latency).
        expires = WRITTEN_AT[opensips_db] + 3600
        assert expires - answered - 30 <= int(alice["Expires"]) <= expires - asked + 1
        # Digest with the imported hashes: alice's from her password, bob's MD5 HA1.
        for user, password in (("alice", "alice-pw"), ("bob", "bob-pw")):
            done = register(tmp_path, edge, user, password, free_port())
            assert done.returncode == 0, summary(done)
        wrong = register(tmp_path, edge, "bob", "not-bob", free_port())
        assert wrong.returncode != 0
        assert len(mi(reg.mi, "ul_show_contact", ["location", "alice@127.0.0.1"]
                      )["result"]["Contacts"]) == 2
    finally:
        edge.stop()
        reg.stop()


def test_sipmesh_pointed_at_the_opensips_database_says_to_import(
        opensips_db: str, tmp_path: Path) -> None:
    done = sipmesh("user", "add", "zoe@127.0.0.1", "pw", "--store", opensips_db, tmp=tmp_path)
    assert done.returncode == 2
    assert "sipmesh import opensips --db URL" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr and "root@" not in done.stderr


def test_a_registrar_on_the_opensips_database_stops_with_one_line(
        opensips_db: str, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIPMESH_")}
    env.update(SIPMESH_REGISTRAR_STORE=opensips_db, XDG_STATE_HOME=str(tmp_path))
    done = subprocess.run([sys.executable, "-m", "services.registrar"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 78, done.stderr
    [line] = [x for x in done.stderr.splitlines() if "configuration error" in x]
    assert "registrar: configuration error:" in line and "sipmesh import opensips" in line
    assert "Traceback" not in done.stderr
