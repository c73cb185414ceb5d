"""The registrar's user location service: the sans-IO table plus what surrounds it.

`UserLocation` wraps `location.Location` with the clock, the subscriber store, the
OpenSIPS events and cluster replication, so the gRPC API and the MI commands are thin.
Every change of the table (from a REGISTER, an MI command or the expiry timer) goes
through `_publish(changes)`, which

* raises the usrloc events with OpenSIPS 2.4's parameters (`E_UL_AOR_INSERT/DELETE {aor}`;
  `E_UL_CONTACT_INSERT/UPDATE/DELETE {aor, uri, received, path, qval, socket, bflags,
  expires, callid, cseq, attr, latency}`); a refresh (only expiry/CSeq changed) raises
  E_UL_CONTACT_UPDATE as OpenSIPS 2.4 does, and E_UL_CONTACT_REFRESH as well;
* in `full-sharing` mode, broadcasts the change over capability `usrloc-contact-repl`
  (records below); a joining node gets the whole table by the engine's full sync.

Acknowledgement rule of the replicating modes (`full-sharing`, `federation-cachedb`): a
node does not answer 200 to a REGISTER it cannot replicate. Until the capability is synced
(a restarted node before its links are Up and its sync is over) a REGISTER gets 503 with
Retry-After and changes nothing; once synced, each change is sent as a tracked update
(`ClusterNode.replicate`) and the 200 waits for the acks of every alive node that should
hold it (`[registrar.cluster] ack_timeout`); when some alive node did not confirm in time
and no other node did either, the answer is 503 (the phone retries; what was applied here
is kept and reaches the others by anti-entropy). Nodes declared failed are not waited for:
they get the table by full sync or anti-entropy when they come back.

Anti-entropy (shared/cluster/antientropy.py): the capability's `summary` is every live
binding as (`aor NUL key`, `p<last_modified>`) plus the deletions it remembers as
tombstones (`d<time>`), kept until the deleted binding would have expired anyway, so a
binding removed on one side of a partition is not brought back by the other side.

Events are raised on the node where the change happened, not where it is replicated to,
so a subscriber hears each change once.  The expiry of a binding is swept on every node
(no replication needed: each node knows the expiry time).

Replication records are JSON: `{"op": "put", "b": {binding}}`,
`{"op": "del", "aor", "key", "t"}` or `{"op": "lat", "aor", "key", "us"}` (a ping
latency); applying them is an idempotent upsert where the newer `last_modified` wins (a
sync retried on another donor sends records again).

`federation-cachedb`: replication (live and the full sync) only between nodes with the
same SIP address (one point of presence); an AOR appearing or disappearing here is noted
in the cachedb directory (`cachedb.DirectoryPublisher`: AOR -> home SIP address), and a
federated lookup adds one branch per other home holding the AOR (`remote_homes`).

`full-sharing-cachedb`: the location table is the Redis one, used exactly as the SQL table
of `sql-only` below (`sql_only` is then a `cachedb.RedisLocationTable`); the cluster only
splits the pinging (`replication="none"`).

With a SQL copy (`persistence.LocationWriter`), every change -- local, replicated or
expired -- is written too (OpenSIPS skip_replicated_db_ops = 0).  When it is written
through (`durable`, the default in mode `none`), a Save is answered only once what it
changed is stored (`save_async`, or `stored()` for the callers that save inline), and a
write that fails answers 503 (`unstored`).

`sql-only` mode (OpenSIPS cluster_mode sql-only): nodes share one SQL location table and
need not know each other. Each Save/Lookup reads its AOR from SQL first and a Save is
written before it is answered; MI reads the whole table. Expired rows are purged by every
node's timer (idempotent).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import json
import math
import os
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Any

import structlog

from services.registrar import digest as check
from services.registrar.location import (
    Binding,
    Change,
    Location,
    Origin,
    Plan,
    RegisterError,
    SaveResult,
    aor_of,
)
from services.registrar.persistence import SQLiteLocationTable, WriteFailed
from services.registrar.subscribers import (
    SQLiteSubscribers,
    Subscriber,
    SubscriberStore,
    select_many,
)
from shared.sip import DigestCredentials, Request, SipParseError

CAPABILITY = "usrloc-contact-repl"
_FIELDS = [f.name for f in dataclasses.fields(Binding)]


def unstored() -> SaveResult:
    """The answer to a REGISTER whose bindings could not be stored: try again later."""
    return SaveResult(503, "Service Unavailable", [("Retry-After", "5")])


def encode_binding(b: Binding) -> dict[str, Any]:
    # Field by field, not dataclasses.asdict: its recursive deep copy cost ~170 us per
    # binding (profiled), the bulk of a write-through REGISTER; every field is a str, int,
    # float or the path tuple, so a shallow read is the same JSON.
    d = {name: getattr(b, name) for name in _FIELDS}
    d["path"] = list(b.path)
    return d


def decode_binding(d: dict[str, Any]) -> Binding:
    values = {k: d[k] for k in _FIELDS if k in d}
    values["path"] = tuple(values.get("path", ()))
    return Binding(**values)


def _put_record(b: Binding) -> bytes:
    return json.dumps({"op": "put", "b": encode_binding(b)}, separators=(",", ":")).encode()


def _del_record(aor: str, key: str, t: float) -> bytes:
    return json.dumps({"op": "del", "aor": aor, "key": key, "t": t},
                      separators=(",", ":")).encode()


def contact_event_params(b: Binding) -> dict[str, Any]:
    """E_UL_CONTACT_* parameters (OpenSIPS 2.4 ul_evi.c)."""
    return {
        "aor": b.aor, "uri": b.uri, "received": b.received, "path": ",".join(b.path),
        "qval": 10 if b.q < 0 else round(b.q / 100), "socket": b.socket, "bflags": b.cflags,
        "expires": int(b.expires), "callid": b.callid, "cseq": b.cseq, "attr": b.attr,
        "latency": b.latency,
    }


class UserLocation:
    def __init__(self, location: Location, store: SubscriberStore, *, events: Any = None,
                 cluster: Any = None, clock: Callable[[], float] = time.time,
                 writer: Any = None, sql_only: Any = None, replication: str = "all",
                 directory: Any = None, home: str = "") -> None:
        self.location = location
        self.store = store
        self.writer = writer  # persistence.LocationWriter: the SQL copy, or None
        # cluster_mode sql-only: the LocationTable shared by every node is the truth; the
        # memory table is only a per-request working copy of the AOR at hand.
        self.sql_only = sql_only
        self.events = events
        self.cluster = cluster
        # "all" (full-sharing), "same-sip" (federation: this PoP only), "none" (cachedb)
        self.replication = replication
        self.directory = directory  # cachedb.DirectoryPublisher (federation) or None
        self.home = home  # this node's SIP address: its home in the federation directory
        self.clock = clock
        # (aor, key) -> (deleted at, keep until): deletions anti-entropy must not undo.
        self.tombstones: dict[tuple[str, str], tuple[float, float]] = {}
        self.log = structlog.get_logger("registrar")
        self.stats: collections.Counter[str] = collections.Counter(
            {"saves": 0, "save_errors": 0, "lookups": 0, "replicated_in": 0,
             "replicated_out": 0, "expired": 0})
        self._timer: asyncio.Task[None] | None = None
        # (username, domain) -> (subscriber or None, cached until): `subscribers`
        self._subscribers: dict[tuple[str, str], tuple[Subscriber | None, float]] = {}
        self.subscriber_ttl = 2.0
        # Node ids of this cluster registered in discovery (None: not known). A peer that
        # left discovery is draining or gone: see _save_replicated.
        self.nodes_in_discovery: set[int] | None = None
        self._one_trip_file: bool | None = None  # `one_trip`: location in the store's file
        self._store_table = ""

    def departed(self, nodes: set[int]) -> set[int]:
        """Those of ``nodes`` not registered (or not ready) in discovery: a node leaves it
        first when it drains (SIGTERM, a rolling restart), the supervisor removes a dead
        one, and a restarted one is not ready until synced."""
        present = self.nodes_in_discovery
        return set() if present is None else {n for n in nodes if n not in present}

    # -- hot paths -----------------------------------------------------------------------
    def save(self, request: Request, origin: Origin, *, replicate: bool = True,
             replay: bool = False) -> SaveResult:
        """`replay`: a Save the edge retried here (location.py: its own binding is kept)."""
        result = self.location.save(request, origin, self.clock(), replay=replay)
        self.stats["saves"] += 1
        if result.status != 200:
            self.stats["save_errors"] += 1
        self._publish(result.changes, replicate=replicate)
        return result

    @property
    def replicating(self) -> bool:
        """The table is shared over the cluster (full-sharing, federation-cachedb)."""
        return self.cluster is not None and self.replication != "none"

    @property
    def saves_inline(self) -> bool:
        """True when `save_async` does no I/O and waits for nothing but, when `durable`,
        the SQL copy (the table is in memory and not replicated): callers may use `save`
        directly, without a task or an await, and then hold a 200 until `stored()` is done."""
        return self.sql_only is None and not self.replicating

    @property
    def durable(self) -> bool:
        """A 200 may leave only once its bindings are in the SQL copy (write-through)."""
        return self.writer is not None and self.writer.write_through

    def stored(self) -> asyncio.Future[None]:
        """Done once every change made so far is stored where this mode keeps it (at once
        without a write-through SQL copy); WriteFailed when it could not be."""
        if self.durable:
            ticket: asyncio.Future[None] = self.writer.ticket()
            return ticket
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        done.set_result(None)
        return done

    async def save_async(self, request: Request, origin: Origin, *,
                         replay: bool = False) -> SaveResult:
        """`save`, answered once what it changed is stored (write-through); in sql-only
        mode the AOR is read from SQL first and written back before the answer leaves (so
        any node answers from the same data); in the replicating modes the acknowledgement
        rule of the module docstring.  A write that fails answers 503: nothing unstored is
        acknowledged."""
        if self.replicating:
            result = await self._save_replicated(request, origin, replay)
            if result.status == 200 and self.durable and not self.writer.settled:
                try:
                    await self.writer.ticket()
                except WriteFailed:
                    return unstored()
            return result
        if self.sql_only is None:
            result = self.save(request, origin, replay=replay)
            if result.status == 200 and self.durable and not self.writer.settled:
                try:
                    await self.writer.ticket()
                except WriteFailed:
                    return unstored()
            return result
        try:
            aor = aor_of(request.to_addr.uri)
        except (RegisterError, SipParseError):
            return self.save(request, origin)  # answers the 400
        await self.refresh(aor)
        result = self.save(request, origin, replay=replay)
        try:
            await self.flush()
        except WriteFailed:
            return unstored()
        return result

    async def save_with_digest(self, request: Request, origin: Origin, digest: Any, *,
                               replay: bool = False) -> tuple[SaveResult, bool]:
        """SaveWithDigest: `save_async` once the credentials (`registrar.v1.Digest`) are
        right for the To user (services/registrar/digest.py); (result, rejected): a wrong
        answer or unknown user saves nothing and says rejected (the edge challenges).
        (The Session's inline path does the same for a whole message: `digest_key`,
        `subscribers`, `refused`, `save`.)"""
        try:
            creds, key = self.digest_key(request, digest)
        except SipParseError:
            return await self.save_async(request, origin, replay=replay), False  # the 400
        refused = None
        if key is None:
            refused = self.refused(request, creds, None)
        else:
            (sub,), (cached,) = await self.subscribers([key])
            refused = self.refused(request, creds, sub, count=not cached)
            if refused is not None and cached:  # perhaps a password changed meanwhile
                (sub,), _ = await self.subscribers([key], fresh=True)
                refused = self.refused(request, creds, sub)
        if refused is not None:
            return refused
        return await self.save_async(request, origin, replay=replay), False

    async def subscribers(self, keys: Sequence[tuple[str, str]], *, fresh: bool = False
                          ) -> tuple[list[Subscriber | None], list[bool]]:
        """The subscribers of `keys` (username, domain) and, for each, whether it came
        from the cache.  Cached `subscriber_ttl` seconds (2 s, as the edge cached HA1s
        before the registrar checked them): a phone's REGISTER and its retransmissions or
        quick refreshes cost no trip to the store.  A check that fails against a cached
        entry asks again with `fresh` (a password changed with `sipmesh user passwd` is
        seen at once); a subscriber removed can still register for up to that long."""
        now = self.clock()
        cache = self._subscribers
        found: list[Subscriber | None] = []
        cached: list[bool] = []
        missing: list[int] = []
        for key in keys:
            hit = None if fresh else cache.get(key)
            if hit is not None and hit[1] > now:
                found.append(hit[0])
                cached.append(True)
            else:
                found.append(None)
                cached.append(False)
                missing.append(len(found) - 1)
        if missing:
            fetched = await self.store.get_many([keys[i] for i in missing])
            if len(cache) > 100_000:
                cache.clear()
            until = now + self.subscriber_ttl
            for i, sub in zip(missing, fetched, strict=True):
                found[i] = sub
                cache[keys[i]] = (sub, until)
        return found, cached

    def one_trip(self) -> bool:
        """`save_batch_with_digest` may be used now: inline durable saves to a SQLite
        location table in the subscribers' own file, with no write of the writer's queued,
        running or waited for.  One other message's trip may still be running: this one
        queues behind it on the table's transaction lock, so both commit in order, and a
        plan it made on an AOR the earlier one changes is caught by `Location.apply` (saved
        again, its rows rewritten).  Going the usual way instead costs a lookup trip and a
        write trip; at 500/s with 20,000 subscribers ~10% of the messages found the
        previous trip still running (docs/perf.md, ninth round).  With a trip already
        waiting too, the table is behind: the usual way then, whose writes the writer
        gathers into one transaction for every message meanwhile (group commit), where a
        trip per message would let the queue grow."""
        writer = self.writer
        if writer is None or not self.durable or not self.saves_inline:
            return False
        if self._one_trip_file is None:
            table, store = writer.table, self.store
            self._one_trip_file = isinstance(table, SQLiteLocationTable) and isinstance(
                store, SQLiteSubscribers) and os.path.realpath(table.path) == \
                os.path.realpath(store.path)
            if isinstance(store, SQLiteSubscribers):
                self._store_table = store.table
        return self._one_trip_file and writer.idle and writer.table.queued <= 1

    async def save_batch_with_digest(
            self, items: Sequence[tuple[Request, Origin, DigestCredentials,
                                        tuple[str, str] | None, bool]]
    ) -> list[tuple[SaveResult, bool]] | None:
        """The SaveWithDigest calls of one Session message in one trip to SQLite's thread
        (when `one_trip`): each REGISTER is planned here (`Location.plan`: checked, not
        applied); on the thread the subscribers not cached are read, each digest checked
        (`digest.verdict`) and the rows of the plans it allows written and committed; back
        here the plans are applied (events raised, nothing left for the writer), so every
        200 leaves with its binding stored, as with `save_with_digest`.  Items are
        (request, origin, credentials, subscriber key or None, replay); answers are
        (result, digest rejected), as `refused` and `save` give them.

        None (nothing done) when two REGISTERs of the message are for one AOR: the second
        would be planned on a table the first changes, and would need a write of its own
        anyway; the caller goes the usual way (`subscribers`, `refused`, `save`, the
        writer).  What the one trip cannot decide goes that way afterwards: a refusal on a
        cached subscriber (read again fresh: a password changed), a plan whose AOR changed
        before it was applied (the rows it wrote are rewritten from the table in memory).
        A failed trip stores and applies nothing: every answer is 503."""
        seen: set[str] = set()
        for msg, *_ in items:
            try:
                aor = aor_of(msg.to_addr.uri)
            except (RegisterError, SipParseError):
                continue  # planned as the 400 it is
            if aor in seen:
                return None
            seen.add(aor)
        now = self.clock()
        cache = self._subscribers
        n = len(items)
        subs: list[Subscriber | None] = [None] * n
        cached = [False] * n
        plans: list[Plan | SaveResult | None] = [None] * n  # None: the usual way, later
        facts: list[tuple[str, bytes, str | None]] = [("", b"", "")] * n
        wanted: dict[tuple[str, str], list[int]] = {}
        for i, (msg, origin, _creds, key, replay) in enumerate(items):
            if key is not None:
                hit = cache.get(key)
                if hit is not None and hit[1] > now:
                    subs[i], cached[i] = hit[0], True
                else:
                    wanted.setdefault(key, []).append(i)
            plans[i] = self.location.plan(msg, origin, now, replay=replay)
            facts[i] = (msg.method, msg.body, msg.to_addr.uri.user)
        pairs = list(wanted)
        verdicts: list[str] = ["rejected"] * n

        def decide(rows: list[Any]) -> tuple[list[Binding], list[tuple[str, str]]]:
            # On SQLite's thread: plain values and the plans' new bindings only.
            for row in rows:
                sub = Subscriber(*row)
                for i in wanted.get((row[0], row[1]), ()):
                    subs[i] = sub
            ups: list[Binding] = []
            dels: list[tuple[str, str]] = []
            for i, (_msg, _origin, creds, key, _replay) in enumerate(items):
                plan = plans[i]
                if plan is None:
                    continue
                method, body, to_user = facts[i]
                verdicts[i] = "rejected" if key is None else check.verdict(
                    creds, subs[i], method, body, to_user)
                if verdicts[i] == "ok" and isinstance(plan, Plan):
                    up, down = plan.writes()
                    ups += up
                    dels += down
            return ups, dels

        started = time.perf_counter()
        sql, params = select_many(self._store_table, pairs) if pairs else ("", [])
        try:
            table: SQLiteLocationTable = self.writer.table
            await table.read_then_write(sql, params, decide)
        except Exception as exc:
            self.log.warning("location_write_failed", error=repr(exc), rows=n)
            self.stats["saves"] += n
            self.stats["save_errors"] += n
            return [(unstored(), False)] * n
        until = now + self.subscriber_ttl
        if len(cache) > 100_000:
            cache.clear()
        for key, at in wanted.items():
            cache[key] = (subs[at[0]], until)
        out: list[tuple[SaveResult, bool]] = []
        stored = 0
        for i, (msg, origin, creds, key, replay) in enumerate(items):
            planned = plans[i]
            verdict = verdicts[i]
            if planned is None or (verdict != "ok" and cached[i]):
                out.append(await self._save_checked(msg, origin, creds, key, replay,
                                                    fresh=cached[i]))
                continue
            if verdict != "ok":
                self.stats["digest_rejected"] += 1
                out.append((SaveResult(401, "Unauthorized"), True) if verdict == "rejected"
                           else (SaveResult(403, check.OTHER_USER_REASON), False))
                continue
            self.stats["saves"] += 1
            if isinstance(planned, SaveResult):
                self.stats["save_errors"] += 1
                out.append((planned, False))
                continue
            result = self.location.apply(planned)
            if result is None:  # the AOR changed since: save again, restore the rows
                self.stats["saves"] -= 1
                out.append((self.save(msg, origin, replay=replay), False))
                self._rewrite(planned)
                continue
            stored += len(result.changes)
            self._publish(result.changes, persisted=True)
            out.append((result, False))
        if stored:
            self.writer.wrote(time.perf_counter() - started, stored)
        return out

    async def _save_checked(self, msg: Request, origin: Origin, creds: DigestCredentials,
                            key: tuple[str, str] | None, replay: bool, *, fresh: bool
                            ) -> tuple[SaveResult, bool]:
        """One SaveWithDigest the usual way (the Session's inline path, one item)."""
        if key is None:
            refused = self.refused(msg, creds, None)
        else:
            (sub,), (was_cached,) = await self.subscribers([key], fresh=fresh)
            refused = self.refused(msg, creds, sub, count=not was_cached)
            if refused is not None and was_cached:
                (sub,), _ = await self.subscribers([key], fresh=True)
                refused = self.refused(msg, creds, sub)
        if refused is not None:
            return refused
        return self.save(msg, origin, replay=replay), False

    def _rewrite(self, plan: Plan) -> None:
        """The rows a stale plan wrote, noted again from the table in memory (the writer's
        transaction comes after the plan's: the SQL copy ends as memory is)."""
        writer = self.writer
        ups, dels = plan.writes()
        for aor, key in [(b.aor, b.key) for b in ups] + dels:
            now_there = next((b for b in self.location.records.get(aor, ()) if b.key == key),
                             None)
            if now_there is not None:
                writer.upsert(now_there)
            else:
                writer.delete_key(aor, key)

    def digest_key(self, request: Request, digest: Any
                   ) -> tuple[DigestCredentials, tuple[str, str] | None]:
        """The credentials of a SaveWithDigest and the subscriber to check them with (None:
        not for the To domain, refused unlooked); SipParseError when the To is unreadable
        (the Save answers 400)."""
        creds = check.credentials_of(digest)
        return creds, check.lookup_key(request, creds)

    def refused(self, request: Request, creds: DigestCredentials,
                sub: Subscriber | None, *, count: bool = True
                ) -> tuple[SaveResult, bool] | None:
        """None when `creds` are right for the To user, else (answer, rejected): 401
        rejected (the edge challenges again), or 403 for another user's credentials.
        `count` False: a verdict on a cached subscriber, checked again fresh."""
        verdict = check.check(request, creds, sub)
        if verdict == "ok":
            return None
        if count:
            self.stats["digest_rejected"] += 1
        if verdict == "rejected":
            return SaveResult(401, "Unauthorized"), True
        return SaveResult(403, check.OTHER_USER_REASON), False

    async def _save_replicated(self, request: Request, origin: Origin,
                               replay: bool) -> SaveResult:
        cluster = self.cluster
        if not cluster.synced(CAPABILITY):
            self.stats["saves"] += 1
            self.stats["save_errors"] += 1
            self.stats["unsynced_refused"] += 1
            return SaveResult(503, "Service Unavailable", [("Retry-After", self.retry_after)])
        result = self.save(request, origin, replicate=False, replay=replay)
        if not result.changes:
            return result
        same = True if self.replication == "same-sip" else None
        done = await asyncio.gather(*(cluster.replicate(CAPABILITY, self._record(c),
                                                        same_sip_addr=same)
                                      for c in result.changes))
        self.stats["replicated_out"] += len(done)
        missing = set().union(*(d.missing for d in done))
        if missing and missing <= self.departed(missing):
            # Each missing node left discovery (drained or dead): it resyncs when it comes
            # back, as one declared down would; refusing would only fail the phones while
            # its link times out (a rolling restart would drop REGISTERs).
            self.stats["replicated_peer_departed"] += 1
        elif any(d.missing and not d.acked for d in done):
            self.stats["save_errors"] += 1
            self.stats["unreplicated_refused"] += 1
            self.log.warning("register_not_replicated", aor=result.changes[0].binding.aor,
                             missing=sorted(set().union(*(d.missing for d in done))))
            return SaveResult(503, "Service Unavailable", [("Retry-After", self.retry_after)])
        return result

    @property
    def retry_after(self) -> str:
        """Retry-After of a 503 from a node that cannot replicate: about one ping
        interval, time for links to come Up or a failed node to be declared down."""
        interval = getattr(getattr(self.cluster, "config", None), "ping_interval", 1.0)
        return str(max(1, math.ceil(interval)))

    async def refresh(self, aor: str | None = None) -> None:
        """sql-only: reload one AOR (or the whole table) from SQL into memory."""
        if self.sql_only is None:
            return
        now = self.clock()
        if aor is not None:
            self.location.replace_aor(aor, await self.sql_only.load_aor(aor, now))
            return
        records: dict[str, list[Binding]] = {}
        for b in await self.sql_only.load(now):
            records.setdefault(b.aor, []).append(b)
        self.location.records = records

    async def flush(self) -> None:
        """Writes pending SQL changes now and returns once they are stored (sql-only and
        write-through answers wait for it; ul_flush); WriteFailed when they could not be."""
        if self.writer is not None:
            await self.writer.flush()

    async def commit(self) -> None:
        """What an MI change waits for before its "OK": `flush` when every change is
        stored before it is acknowledged (write-through, sql-only, cachedb), else nothing."""
        if self.durable:
            await self.flush()

    async def lookup(self, aor: str, method: str, *, max_latency_us: int = 0,
                     by_latency: bool = False) -> tuple[int, list[Binding]]:
        """(200, bindings) | (404, []) no such user | (480, []) no usable binding."""
        self.stats["lookups"] += 1
        await self.refresh(aor)
        found = self.location.lookup(aor, method, self.clock(), max_latency_us=max_latency_us,
                                     by_latency=by_latency)
        if found:
            return 200, found
        user, _, domain = aor.partition("@")
        if await self.store.get(user, domain) is None and aor not in self.location.records:
            return 404, []
        return 480, []

    async def remote_homes(self, aor: str) -> list[str]:
        """federation-cachedb: the home SIP addresses of the other points of presence
        holding `aor` (OpenSIPS lookup flag g) and alive, sorted; [] in other modes."""
        if self.directory is None:
            return []
        homes = await self.directory.directory.homes(aor)
        homes.discard(self.home)
        live = self.directory.live
        if live is not None:  # a PoP whose registrars are all gone delivers nothing
            homes &= live
        return sorted(homes)

    def held_aors(self) -> set[str]:
        """The AORs this node holds bindings of (the federation directory's truth)."""
        return set(self.location.records)

    async def credentials(self, username: str, domain: str) -> Subscriber | None:
        return await self.store.get(username, domain)

    # -- operator actions (MI) -----------------------------------------------------------
    def remove_aor(self, aor: str) -> bool:
        changes = self.location.remove_aor(aor)
        self._publish(changes)
        return bool(changes)

    def remove_contact(self, aor: str, contact: str) -> bool:
        changes = self.location.remove_contact(aor, contact)
        self._publish(changes)
        return bool(changes)

    def add(self, binding: Binding) -> None:
        binding.last_modified = self.clock()
        self._publish([self.location.add(binding)])

    def expire(self) -> int:
        now = self.clock()
        changes = self.location.expire(now)
        self.stats["expired"] += len(changes)
        self._publish(changes, replicate=None)
        for k in [k for k, (_, until) in self.tombstones.items() if until <= now]:
            del self.tombstones[k]
        return len(changes)

    def load(self, bindings: list[Binding]) -> int:
        """Bindings read back from SQL at start (load-from-sql): no events, no replication."""
        for b in bindings:
            self.location.apply_replica(b)
        return len(bindings)

    # -- changes -> events and replication -----------------------------------------------
    def _publish(self, changes: list[Change], *, replicate: bool | None = True,
                 persisted: bool = False) -> None:
        """Events, SQL copy, directory, and (``replicate`` True) broadcast of every change.
        ``replicate`` False: the caller replicates (tracked saves); None: changes no other
        node needs (expiry, which every node sweeps itself: no tombstones either).
        ``persisted``: the caller stored them already (`save_batch_with_digest`)."""
        if not changes:
            return
        for change in changes:
            self._raise(change)
        if not persisted:
            self._persist(changes)
        self._note_directory(changes)
        if self.replicating:
            for change in changes:
                b = change.binding
                if change.kind != "delete":
                    self.tombstones.pop((b.aor, b.key), None)  # registered again
                elif replicate is not None:
                    self._bury(b, self.clock())
            if replicate:
                for change in changes:
                    self._send(self._record(change))
                    self.stats["replicated_out"] += 1

    def _persist(self, changes: Sequence[Change | None]) -> None:
        writer = self.writer
        if writer is None:
            return
        for change in changes:
            if change is None:
                continue
            if change.kind == "delete":
                writer.delete(change.binding)
            else:
                writer.upsert(change.binding)

    def _note_directory(self, changes: Sequence[Change | None]) -> None:
        directory = self.directory
        if directory is None:
            return
        for change in changes:
            if change is None:
                continue
            if change.aor_created:
                directory.note(change.binding.aor, True)
            elif change.aor_deleted:
                directory.note(change.binding.aor, False)

    def _send(self, payload: bytes) -> None:
        if self.replication == "same-sip":
            self.cluster.send_all(CAPABILITY, payload, same_sip_addr=True)
        else:
            self.cluster.broadcast(CAPABILITY, payload)

    def _raise(self, change: Change) -> None:
        events = self.events
        if events is None:
            return
        b = change.binding
        if change.aor_created:
            events.publish("E_UL_AOR_INSERT", {"aor": b.aor})
        params = contact_event_params(b)
        if change.kind == "insert":
            events.publish("E_UL_CONTACT_INSERT", params)
        elif change.kind in ("update", "refresh"):
            events.publish("E_UL_CONTACT_UPDATE", params)
            if change.kind == "refresh":
                events.publish("E_UL_CONTACT_REFRESH", params)
        elif change.kind == "delete":
            events.publish("E_UL_CONTACT_DELETE", params)
        if change.aor_deleted:
            events.publish("E_UL_AOR_DELETE", {"aor": b.aor})

    def _record(self, change: Change) -> bytes:
        """The replication record of a change (module docstring)."""
        b = change.binding
        if change.kind == "delete":
            t = self.tombstones.get((b.aor, b.key), (self.clock(), 0.0))[0]
            return _del_record(b.aor, b.key, t)
        return _put_record(b)

    def _bury(self, b: Binding, t: float) -> None:
        """Remembers a deletion until the binding would have expired anyway (a binding
        with no expiry: a day), so anti-entropy does not bring it back."""
        until = b.expires if b.expires else t + 86400.0
        self.tombstones[(b.aor, b.key)] = (t, max(until, t + 1.0))

    def set_latency(self, binding: Binding, latency_us: int) -> None:
        """A ping measured `binding`: stored here and on the other nodes (so their lookups
        can skip or order by it too), with no usrloc event but E_UL_LATENCY_UPDATE."""
        binding.latency = latency_us
        if self.writer is not None and self.sql_only is not None:
            self.writer.upsert(binding)  # cachedb/sql-only: the shared table holds it
        elif self.cluster is not None and self.replication != "none":
            record = {"op": "lat", "aor": binding.aor, "key": binding.key, "us": latency_us}
            self._send(json.dumps(record, separators=(",", ":")).encode())

    # -- cluster capability callbacks ----------------------------------------------------
    def produce(self) -> Iterator[bytes]:
        """The whole table as `put` records (full sync donor)."""
        for b in list(self.location.bindings()):
            yield _put_record(b)

    def summary(self) -> Iterator[tuple[bytes, bytes]]:
        """Anti-entropy items: live bindings and tombstones (module docstring)."""
        now = self.clock()
        items = [(f"{b.aor}\0{b.key}".encode(), f"p{b.last_modified!r}".encode())
                 for b in self.location.bindings() if b.alive(now)]
        items += [(f"{aor}\0{key}".encode(), f"d{t!r}".encode())
                  for (aor, key), (t, _) in self.tombstones.items()]
        return iter(items)

    def records_for(self, keys: Collection[bytes]) -> Iterator[bytes]:
        """The records of anti-entropy ``keys``: a binding's put, or a tombstone's del."""
        out = []
        now = self.clock()
        for raw in keys:
            aor, _, key = raw.decode().partition("\0")
            found = next((b for b in self.location.records.get(aor, ()) if b.key == key
                          and b.alive(now)), None)
            if found is not None:
                out.append(_put_record(found))
            elif (aor, key) in self.tombstones:
                out.append(_del_record(aor, key, self.tombstones[(aor, key)][0]))
        return iter(out)

    def apply_sync(self, records: list[bytes]) -> None:
        for rec in records:
            self._apply(rec)

    def apply_update(self, src: int, payload: bytes) -> None:
        self._apply(payload)

    def _apply(self, payload: bytes) -> None:
        try:
            record = json.loads(payload)
            if record["op"] == "put":
                b = decode_binding(record["b"])
                if not b.is_utf8():
                    raise ValueError("binding text is not UTF-8")
                grave = self.tombstones.get((b.aor, b.key))
                if grave is not None:
                    if grave[0] >= b.last_modified:
                        return  # deleted after this version was written
                    del self.tombstones[(b.aor, b.key)]
                change = self.location.apply_replica(b)
            elif record["op"] == "lat":
                for b in self.location.records.get(record["aor"], ()):
                    if b.key == record["key"]:
                        b.latency = int(record["us"])
                return
            elif record["op"] == "del":
                t = float(record["t"])
                change = self.location.remove_replica(record["aor"], record["key"], t)
                grave = self.tombstones.get((record["aor"], record["key"]))
                if change is not None:
                    self._bury(change.binding, t)
                elif grave is not None and grave[0] < t:
                    self.tombstones[(record["aor"], record["key"])] = (t, grave[1])
                elif grave is None and not any(
                        b.key == record["key"] for b in self.location.records.get(
                            record["aor"], ())):
                    # Not here (yet): remember it, so a late put of an older version
                    # stays deleted. Kept one day at most (no expiry is known).
                    self.tombstones[(record["aor"], record["key"])] = (t, t + 86400.0)
            else:
                return
            self._persist([change])
            self._note_directory([change])
            self.stats["replicated_in"] += 1
        except (ValueError, KeyError, TypeError) as exc:
            self.log.warning("replica_rejected", error=repr(exc))

    # -- lifecycle -----------------------------------------------------------------------
    def start_timer(self, interval: float) -> None:
        async def sweep() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    self.expire()
                    if self.sql_only is not None:
                        await self.sql_only.purge(self.clock())
                except Exception:
                    self.log.exception("expiry_failed")

        self._timer = asyncio.create_task(sweep())

    async def stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._timer
