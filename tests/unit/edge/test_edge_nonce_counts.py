"""Nonce-count replay tracking (services/edge/nonce_counts.py) with both backends: the
table of one process and the table shared by every worker of an edge through a mapped
file, down to two real processes checking the same nonce."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from services.edge.auth import ProxyAuthenticator
from services.edge.nonce_counts import (
    LocalNonceCounts,
    NonceCounts,
    NonceCountsError,
    SharedNonceCounts,
    create_segment,
)
from shared.sip import (
    Request,
    answer_challenge,
    parse_challenge,
    parse_credentials,
    parse_message,
)

ROOT = Path(__file__).resolve().parents[3]
EPOCH = 1_000_000
HA1 = hashlib.md5(b"alice:example.com:pw").hexdigest()

# A table factory: (slots, issuers, issuer) -> table
Factory = Callable[[int, int, int], NonceCounts]


class Clock:
    def __init__(self) -> None:
        self.now = float(EPOCH)

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["local", "shared"])
def tables(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Factory]:
    opened: list[NonceCounts] = []

    def make(slots: int = 64, issuers: int = 1, issuer: int = 0) -> NonceCounts:
        table: NonceCounts
        if request.param == "local":
            assert issuers == 1
            table = LocalNonceCounts(EPOCH, slots=slots)
        else:
            path = create_segment(EPOCH, issuers, slots=slots, directory=str(tmp_path))
            table = SharedNonceCounts(path, issuer)
        opened.append(table)
        return table

    yield make
    for table in opened:
        table.close()


async def ha1_of(username: str, algorithm: str, fresh: bool) -> str | None:
    return HA1 if username == "alice" else None


def register(challenge: str, nc: int, cnonce: str = "c", branch: str = "1") -> Request:
    creds = answer_challenge(parse_challenge(challenge), username="alice", password="pw",
                             method="REGISTER", uri="sip:example.com", cnonce=cnonce, nc=nc)
    msg = parse_message((
        "REGISTER sip:example.com SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP 10.0.0.5;branch=z9hG4bK{branch}\r\n"
        "From: <sip:alice@example.com>;tag=1\r\nTo: <sip:alice@example.com>\r\n"
        "Call-ID: c1\r\nCSeq: 2 REGISTER\r\nMax-Forwards: 70\r\n"
        f"Authorization: {creds}\r\nContent-Length: 0\r\n\r\n").encode())
    assert isinstance(msg, Request)
    return msg


async def check(auth: ProxyAuthenticator, request: Request) -> tuple[str | None, bool]:
    return await auth.verify(request, "Authorization", "example.com", ha1_of)


def authenticator(table: NonceCounts, clock: Clock | None = None) -> ProxyAuthenticator:
    return ProxyAuthenticator("x", {}, b"k" * 32, clock or Clock(), nonce_ttl=30,
                              counts=table)


# -- the table itself ------------------------------------------------------------------------

def test_replay_refused_higher_count_accepted(tables: Factory) -> None:
    table = tables(64, 1, 0)
    slot, generation = table.issue()
    assert table.advance(slot, generation, 1) == "ok"
    assert table.advance(slot, generation, 1) == "replay"
    assert table.advance(slot, generation, 3) == "ok"
    assert table.advance(slot, generation, 2) == "replay"  # lower than the highest seen
    assert table.advance(slot, generation, 4) == "ok"


def test_a_newer_nonce_on_the_same_slot_makes_the_older_one_stale(tables: Factory) -> None:
    table = tables(4, 1, 0)
    issued = [table.issue() for _ in range(5)]
    first, fifth = issued[0], issued[4]
    assert first[0] == fifth[0] and first[1] < fifth[1]  # round robin over 4 slots
    assert len({slot for slot, _ in issued[:4]}) == 4
    assert table.advance(*first, 1) == "ok"
    assert table.advance(*fifth, 1) == "ok"  # claims the slot
    assert table.advance(*first, 2) == "stale"
    assert table.advance(*fifth, 2) == "ok"


def test_an_older_nonce_never_takes_a_slot_back(tables: Factory) -> None:
    table = tables(4, 1, 0)
    issued = [table.issue() for _ in range(5)]
    assert table.advance(*issued[4], 1) == "ok"
    assert table.advance(*issued[0], 1) == "stale"  # issued earlier, used later


def test_out_of_range_values_are_refused_not_raised(tables: Factory) -> None:
    table = tables(8, 1, 0)
    slot, generation = table.issue()
    assert table.advance(8, generation, 1) == "bad"
    assert table.advance(-1, generation, 1) == "bad"
    assert table.advance(slot, 0, 1) == "bad"
    assert table.advance(slot, generation, -1) == "bad"
    assert table.advance(slot, generation, 1 << 64) == "bad"
    assert table.advance(slot, generation, (1 << 64) - 1) == "ok"


def test_workers_issue_from_disjoint_slots(tmp_path: Path) -> None:
    path = create_segment(EPOCH, 2, slots=8, directory=str(tmp_path))
    a, b = SharedNonceCounts(path, 0), SharedNonceCounts(path, 1)
    try:
        mine = {a.issue()[0] for _ in range(8)}
        theirs = {b.issue()[0] for _ in range(8)}
        assert mine and theirs and not mine & theirs
        assert mine | theirs <= set(range(8))
    finally:
        a.close()
        b.close()


def test_generations_go_on_after_a_worker_reopens_the_table(tmp_path: Path) -> None:
    path = create_segment(EPOCH, 1, slots=8, directory=str(tmp_path))
    first = SharedNonceCounts(path, 0)
    slot, generation = first.issue()
    assert first.advance(slot, generation, 1) == "ok"
    first.close()
    again = SharedNonceCounts(path, 0)  # a restarted worker on the same table
    try:
        later = again.issue()
        assert later[1] > generation
        assert again.advance(slot, generation, 1) == "replay"  # still remembered
    finally:
        again.close()


def test_bad_tables_get_a_clear_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk"
    junk.write_bytes(b"x" * 4096)
    with pytest.raises(NonceCountsError, match="bad magic"):
        SharedNonceCounts(str(junk), 0)
    with pytest.raises(NonceCountsError, match="cannot open"):
        SharedNonceCounts(str(tmp_path / "missing"), 0)
    short = tmp_path / "short"
    short.write_bytes(b"")
    with pytest.raises(NonceCountsError, match="not a nonce table"):
        SharedNonceCounts(str(short), 0)
    path = create_segment(EPOCH, 2, slots=8, directory=str(tmp_path))
    with pytest.raises(NonceCountsError, match="issuer 2"):
        SharedNonceCounts(path, 2)
    with pytest.raises(NonceCountsError, match="slots >= issuers"):
        create_segment(EPOCH, 4, slots=2, directory=str(tmp_path))
    with pytest.raises(NonceCountsError, match="cannot create"):
        create_segment(EPOCH, 1, slots=2, directory=str(tmp_path / "missing"))
    os.truncate(path, 100)
    with pytest.raises(NonceCountsError, match="damaged"):
        SharedNonceCounts(path, 0)


# -- through the authenticator ----------------------------------------------------------------

async def test_replayed_request_is_challenged_a_higher_count_passes(tables: Factory) -> None:
    auth = authenticator(tables(64, 1, 0))
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    assert await check(auth, register(challenge, 1)) == ("alice", False)
    assert await check(auth, register(challenge, 1, branch="2")) == (None, False)
    assert await check(auth, register(challenge, 2, cnonce="d")) == ("alice", False)


async def test_slot_reuse_gets_a_stale_challenge(tables: Factory) -> None:
    auth = authenticator(tables(2, 1, 0))
    old, _, newer = auth.challenges("example.com", False, ["MD5"] * 3)
    assert await check(auth, register(old, 1)) == ("alice", False)
    assert await check(auth, register(newer, 1)) == ("alice", False)
    assert await check(auth, register(old, 2)) == (None, True)


async def test_expired_nonce_is_stale(tables: Factory) -> None:
    clock = Clock()
    auth = authenticator(tables(64, 1, 0), clock)
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    assert await check(auth, register(challenge, 1)) == ("alice", False)
    clock.now += 31
    assert await check(auth, register(challenge, 2)) == (None, True)


async def test_a_nonce_older_than_the_table_is_stale(tables: Factory) -> None:
    # A nonce of an earlier run (same secret) was tracked in a table that is gone.
    clock = Clock()
    clock.now -= 5
    earlier = authenticator(LocalNonceCounts(EPOCH - 5), clock)
    [challenge] = earlier.challenges("example.com", False, ["MD5"])
    clock.now += 5
    assert await check(authenticator(tables(64, 1, 0), clock),
                       register(challenge, 1)) == (None, True)


@pytest.mark.parametrize("nc", ["zz", "1" * 17, "-1"])
async def test_unreadable_nonce_counts_are_challenged(tables: Factory, nc: str) -> None:
    auth = authenticator(tables(64, 1, 0))
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    good = register(challenge, 1)
    value = str(good.get("Authorization"))
    assert "nc=00000001" in value
    good.remove_header("Authorization")
    # The digest response no longer matches either, but the count is refused on its own:
    # the authenticator must answer, not raise.
    good.add_header("Authorization", value.replace("nc=00000001", f"nc={nc}"))
    assert await check(auth, good) == (None, False)
    creds = parse_credentials(str(good.get("Authorization")))
    assert auth._count(*auth.counts.issue(), creds) == "bad"


def test_non_ascii_or_foreign_nonces_are_not_ours() -> None:
    auth = authenticator(LocalNonceCounts(EPOCH))
    assert auth._nonce_state("1-2-3-4.\u00e9t\u00e9")[0] == "bad"
    assert auth._nonce_state("no dot at all")[0] == "bad"
    body = "1-2"  # signed by us but not our format
    assert auth._nonce_state(f"{body}.{auth._sign(body)}")[0] == "bad"
    assert auth._nonce_state(auth.nonce())[0] == "ok"


def test_an_empty_secret_is_refused() -> None:
    with pytest.raises(ValueError, match="secret"):
        ProxyAuthenticator("x", {}, b"", Clock())


def test_a_long_secret_signs_nonces_the_other_workers_accept() -> None:
    secret = b"s" * 100
    a = ProxyAuthenticator("x", {}, secret, Clock())
    b = ProxyAuthenticator("x", {}, secret, Clock())
    c = ProxyAuthenticator("x", {}, b"t" * 100, Clock())
    nonce = a.nonce()
    assert b._nonce_state(nonce)[0] == "ok"
    assert c._nonce_state(nonce)[0] == "bad"


# -- two processes on one table ----------------------------------------------------------------

CHILD = """
import sys
from services.edge.nonce_counts import SharedNonceCounts
table = SharedNonceCounts(sys.argv[1], 1)
for line in sys.stdin:
    slot, generation, count = map(int, line.split())
    print(table.advance(slot, generation, count), flush=True)
"""

RACER = """
import sys
from services.edge.nonce_counts import SharedNonceCounts
table = SharedNonceCounts(sys.argv[1], int(sys.argv[2]))
slot, generation, top = map(int, sys.argv[3:6])
print("ready", flush=True)
sys.stdin.readline()  # start together
accepted = [n for n in range(1, top + 1) if table.advance(slot, generation, n) == "ok"]
print(" ".join(map(str, accepted)), flush=True)
"""


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def test_a_count_used_in_one_process_is_a_replay_in_the_other(tmp_path: Path) -> None:
    path = create_segment(EPOCH, 2, slots=64, directory=str(tmp_path))
    here = SharedNonceCounts(path, 0)
    other = _python(CHILD, path)
    assert other.stdin is not None and other.stdout is not None

    def there(slot: int, generation: int, count: int) -> str:
        assert other.stdin is not None and other.stdout is not None
        other.stdin.write(f"{slot} {generation} {count}\n")
        other.stdin.flush()
        return other.stdout.readline().strip()

    try:
        slot, generation = here.issue()
        assert here.advance(slot, generation, 1) == "ok"
        assert there(slot, generation, 1) == "replay"
        assert there(slot, generation, 2) == "ok"
        assert here.advance(slot, generation, 2) == "replay"
        assert here.advance(slot, generation, 3) == "ok"
    finally:
        other.stdin.close()
        assert other.wait(10) == 0
        here.close()


def test_two_processes_racing_on_one_nonce_never_both_accept_a_count(tmp_path: Path) -> None:
    # Without the slot lock both could read the same highest count and both accept.
    path = create_segment(EPOCH, 2, slots=64, directory=str(tmp_path))
    owner = SharedNonceCounts(path, 0)
    slot, generation = owner.issue()
    owner.close()
    top = 100_000
    racers = [_python(RACER, path, str(i), str(slot), str(generation), str(top))
              for i in range(2)]
    for racer in racers:
        assert racer.stdout is not None
        assert racer.stdout.readline() == "ready\n"
    for racer in racers:
        assert racer.stdin is not None
        racer.stdin.write("go\n")
        racer.stdin.flush()
    accepted = []
    for racer in racers:
        out, _ = racer.communicate(timeout=60)
        assert racer.returncode == 0
        accepted.append({int(n) for n in out.split()})
    first, second = accepted
    assert not first & second
    assert top in first | second  # the highest count went through somewhere


# -- claims for a check made by the registrar (SaveWithDigest, issue 22) ------------------------

def test_a_released_claim_restores_the_slot_unless_a_later_claim_won(tables: Factory) -> None:
    table = tables(64, 1, 0)
    slot, gen = table.issue()
    assert table.advance(slot, gen, 3) == "ok"
    verdict, owner, highest = table.claim(slot, gen, 5)
    assert (verdict, owner, highest) == ("ok", gen, 3)
    table.release(slot, gen, 5, owner, highest)  # the answer with nc 5 was wrong
    assert table.advance(slot, gen, 4) == "ok"  # the phone's own next count still passes
    verdict, owner, highest = table.claim(slot, gen, 6)
    assert table.advance(slot, gen, 7) == "ok"  # a later count won meanwhile
    table.release(slot, gen, 6, owner, highest)
    assert table.advance(slot, gen, 7) == "replay"  # not undone by the late release
    assert table.claim(slot, gen, 7) == ("replay", gen, 7)


def test_a_released_first_claim_gives_the_slot_back_to_its_older_nonce(
        tables: Factory) -> None:
    table = tables(2, 1, 0)
    old_slot, old_gen = table.issue()
    table.issue()
    slot, gen = table.issue()
    assert slot == old_slot and gen > old_gen
    assert table.advance(old_slot, old_gen, 1) == "ok"
    verdict, owner, highest = table.claim(slot, gen, 1)
    assert (verdict, owner, highest) == ("ok", old_gen, 1)
    table.release(slot, gen, 1, owner, highest)  # a forged answer displaces nothing
    assert table.advance(old_slot, old_gen, 2) == "ok"


def test_authenticator_claims_one_live_answer_only(tables: Factory) -> None:
    clock = Clock()
    auth = authenticator(tables(64, 1, 0), clock)
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    claim = auth.claim(register(challenge, 1), "Authorization", "example.com")
    assert claim is not None and claim.verdict == "ok" and claim.creds.username == "alice"
    again = auth.claim(register(challenge, 1, branch="2"), "Authorization", "example.com")
    assert again is not None and again.verdict == "replay"
    auth.release(again)  # a refused claim holds nothing: releasing it changes nothing
    assert auth.claim(register(challenge, 1, branch="3"), "Authorization",
                      "example.com").verdict == "replay"  # type: ignore[union-attr]
    # Not decided here: another realm, no credentials, an expired nonce (stale=true is
    # said only after the response is checked: `verify`).
    assert auth.claim(register(challenge, 2), "Authorization", "other.example") is None
    assert auth.claim(register(challenge, 2), "Proxy-Authorization", "example.com") is None
    clock.now += 31
    assert auth.claim(register(challenge, 2), "Authorization", "example.com") is None


def test_authenticator_claim_refuses_an_unusable_count(tables: Factory) -> None:
    auth = authenticator(tables(64, 1, 0))
    [challenge] = auth.challenges("example.com", False, ["MD5"])
    request = register(challenge, 1)
    value = request.get("Authorization") or ""
    request.remove_header("Authorization")
    request.add_header("Authorization", value.replace("nc=00000001", "nc=zz"))
    claim = auth.claim(request, "Authorization", "example.com")
    assert claim is not None and claim.verdict == "bad"
