"""The event state compositor's publication table (RFC 3903), sans-IO.

Each publication is one soft state of one presentity (`user@domain`) and event package,
named by an entity-tag. The rules, in RFC 3903 §6's order (the caller has already answered
489 for an unknown event package, step 2):

* §6 step 3: a SIP-If-Match naming no publication of this presentity and event: 412.
* §6 step 4: Expires below `min_expires` (and not 0): 423 with Min-Expires; above
  `max_expires`: lowered; absent: `default_expires`.
* §6 step 5: no SIP-If-Match is an initial publication and must carry a body (400
  otherwise); with one, an empty body refreshes, a body modifies, and Expires 0 removes.
* §6 step 6/7: the body is checked (a PIDF document, services/presence/pidf.py; 415 for
  another content type, 400 for a malformed one).
* §6 step 8: every accepted PUBLISH gets a new entity-tag, answered with SIP-ETag and
  Expires (200).
* §5 and §6: a publication not refreshed by its expiry is removed (`expire`).

The table only decides; `now` and the new entity-tag are passed in, and each call says
what changed so the caller stores it and notifies the watchers.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass

from services.presence import pidf


@dataclass(slots=True)
class Publication:
    presentity: str  # user@domain
    event: str
    etag: str
    expires_at: float
    body: bytes
    content_type: str
    received_at: float  # when first published: composition order
    sender: str = ""  # the publisher's From URI
    node: int = 0  # the presence node that accepted it

    def to_record(self) -> dict[str, object]:
        record = dataclasses.asdict(self)
        record["body"] = self.body.decode("utf-8", "replace")
        return record

    @classmethod
    def from_record(cls, record: dict[str, object]) -> Publication:
        data = dict(record)
        data["body"] = str(data["body"]).encode()
        return cls(**data)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    status: int
    reason: str = ""
    headers: tuple[tuple[str, str], ...] = ()
    stored: Publication | None = None  # the publication as it is now (to write)
    removed: Publication | None = None  # the publication that went away (to delete)
    old_etag: str = ""  # the entity-tag a refresh or modification replaced
    changed: bool = False  # the presentity's composed state changed: notify its watchers


@dataclass(frozen=True, slots=True)
class Limits:
    min_expires: int = 10
    max_expires: int = 3600
    default_expires: int = 3600


class PublicationTable:
    def __init__(self, limits: Limits = Limits()) -> None:
        self.limits = limits
        self.by_etag: dict[str, Publication] = {}
        self.by_presentity: dict[tuple[str, str], dict[str, Publication]] = {}

    def __len__(self) -> int:
        return len(self.by_etag)

    def __iter__(self) -> Iterator[Publication]:
        return iter(list(self.by_etag.values()))

    def of(self, presentity: str, event: str = "presence") -> list[Publication]:
        """The live publications of a presentity, oldest first (composition order)."""
        found = self.by_presentity.get((presentity, event), {})
        return sorted(found.values(), key=lambda p: (p.received_at, p.etag))

    def compose(self, presentity: str, event: str = "presence") -> bytes:
        """The presentity's state as one PIDF document (b"" when nothing is published)."""
        pubs = self.of(presentity, event)
        if not pubs:
            return b""
        return pidf.aggregate(f"sip:{presentity}", [p.body for p in pubs])

    def add(self, pub: Publication) -> None:
        """Puts a publication in (loaded from the store, or from another node)."""
        old = self.by_etag.get(pub.etag)
        if old is not None:
            self._drop(old)
        self.by_etag[pub.etag] = pub
        self.by_presentity.setdefault((pub.presentity, pub.event), {})[pub.etag] = pub

    def _drop(self, pub: Publication) -> None:
        self.by_etag.pop(pub.etag, None)
        group = self.by_presentity.get((pub.presentity, pub.event))
        if group is not None:
            group.pop(pub.etag, None)
            if not group:
                del self.by_presentity[(pub.presentity, pub.event)]

    def remove(self, etag: str) -> Publication | None:
        pub = self.by_etag.get(etag)
        if pub is not None:
            self._drop(pub)
        return pub

    def publish(self, presentity: str, event: str, *, if_match: str | None,
                expires: int | None, body: bytes, content_type: str | None, now: float,
                new_etag: str, sender: str = "", node: int = 0) -> PublishOutcome:
        limits = self.limits
        current: Publication | None = None
        if if_match is not None:
            current = self.by_etag.get(if_match.strip())
            if current is None or (current.presentity, current.event) != (presentity, event):
                return PublishOutcome(412, "Conditional Request Failed")  # §6 step 3
        # §6 step 4: the expiration interval.
        if expires is None:
            expires = limits.default_expires
        if expires < 0:
            return PublishOutcome(400, "Bad Expires")
        if 0 < expires < limits.min_expires:
            return PublishOutcome(423, "Interval Too Brief",
                                  (("Min-Expires", str(limits.min_expires)),))
        expires = min(expires, limits.max_expires)
        if current is None and not body:
            return PublishOutcome(400, "Missing Body")  # §6 step 5: an initial PUBLISH
        if body:
            # §6 step 6/7: the package's body format.
            if (content_type or "").split(";")[0].strip().lower() != pidf.CONTENT_TYPE:
                return PublishOutcome(415, "Unsupported Media Type",
                                      (("Accept", pidf.CONTENT_TYPE),))
            try:
                pidf.parse(body)
            except pidf.PidfError as exc:
                return PublishOutcome(400, f"Bad PIDF: {exc}"[:120])
        if expires == 0:
            if current is None:
                return PublishOutcome(400, "Expires 0 Without SIP-If-Match")
            self._drop(current)  # §6 step 5: removal
            return PublishOutcome(200, "OK", (("SIP-ETag", current.etag), ("Expires", "0")),
                                  removed=current, old_etag=current.etag, changed=True)
        if current is not None:
            self._drop(current)
            changed = bool(body) and body != current.body
            pub = dataclasses.replace(current, etag=new_etag, expires_at=now + expires,
                                      body=body or current.body, node=node)
        else:
            changed = True
            pub = Publication(presentity, event, new_etag, now + expires, body,
                              pidf.CONTENT_TYPE, now, sender, node)
        self.add(pub)
        return PublishOutcome(200, "OK", (("SIP-ETag", new_etag), ("Expires", str(expires))),
                              stored=pub, old_etag=current.etag if current else "",
                              changed=changed)

    def expire(self, now: float) -> list[Publication]:
        """Removes the publications whose time is up (§5), and returns them."""
        gone = [p for p in self.by_etag.values() if p.expires_at <= now]
        for pub in gone:
            self._drop(pub)
        return gone

    def next_deadline(self) -> float | None:
        return min((p.expires_at for p in self.by_etag.values()), default=None)
