"""rtpengine sets: instances with weights, choice per call, disable and recheck (pure).

OpenSIPS 2.4 `rtpengine_sock` / the `rtpengine` table: a set is a list of instances
`udp:host:port[=weight]` under a numeric id (`"1 == udp:10.0.0.1:2223=1 udp:10.0.0.2:2223=3"`;
no `==` means the default set 0).  `rtpengine_use_set(id)` picks the set of a call.

**Choice of the instance of a call.**  Every broker must pick the same instance for one
call (offer, answer and delete may reach different brokers), so the choice is a function
of the call's key (its Call-ID) and the set alone: weighted rendezvous hashing (highest
random weight, Thaler & Ravishankar; the weighted score `w / -ln(u)` of Schindelhauer &
Schomaker), u uniform in (0, 1) from a hash of (key, instance url).  An instance wins with
probability weight / sum of weights, as OpenSIPS's weighted choice; unlike OpenSIPS's
(`sum(callid bytes) % total weight` walked over the list), disabling one instance moves only
the calls that instance would have had, and every other call keeps its instance.

`home()` is that choice over every instance of the set; `select()` the same over the
enabled ones.  When they differ (the home instance is down), the call is not where every
broker would look: the broker records the exception (services/media/calls.py).

**Disable and recheck.**  An instance that does not answer a request is disabled for
`disable_timeout` (OpenSIPS `rtpengine_disable_tout`, 60 s) and then pinged again; a pong
enables it.  `rtpengine_enable url 0` disables it until `rtpengine_enable url 1` (no
recheck, OpenSIPS's `MI_MAX_RECHECK_TICKS`).  Each change is reported once, for
`E_RTPENGINE_STATUS`.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from dataclasses import dataclass, field

DEFAULT_SET = 0
FOREVER = float("inf")
MAX_RECHECK_TICKS = 4294967295  # (unsigned int)-1: what rtpengine_show says for "forever"


class SetError(ValueError):
    """A set definition that cannot be used."""


@dataclass(slots=True)
class Engine:
    """One rtpengine instance of one set (OpenSIPS `rtpe_node`)."""

    url: str  # as configured, without the weight: "udp:127.0.0.1:2223"
    host: str
    port: int
    weight: int
    set_id: int
    index: int = 0
    disabled: bool = False
    recheck_at: float = 0.0  # disabled: when to ping it again (FOREVER: by MI only)
    seed: bytes = b""

    @property
    def target(self) -> tuple[str, int]:
        return self.host, self.port


@dataclass(frozen=True, slots=True)
class StatusChange:
    """An instance became active or inactive (E_RTPENGINE_STATUS)."""

    url: str
    set_id: int
    active: bool


def parse_socket(url: str) -> tuple[str, int]:
    """`udp:host:port`, `udp:[v6]:port` or `host:port` -> (host, port).  Only UDP: the ng
    protocol over unix sockets is not offered."""
    rest = url
    for scheme in ("udp:", "udp6:"):
        if rest.lower().startswith(scheme):
            rest = rest[len(scheme):]
            break
    else:
        if rest.lower().startswith("unix:"):
            raise SetError(f"{url!r}: unix sockets are not supported, use udp:host:port")
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        raise SetError(f"{url!r} is not udp:host:port")
    try:
        number = int(port)
    except ValueError:
        raise SetError(f"{url!r}: bad port") from None
    if not 0 < number < 65536:
        raise SetError(f"{url!r}: port out of range")
    return host.strip("[]"), number


def parse_sockets(text: str) -> list[tuple[str, int]]:
    """`udp:h:p[=w] udp:h2:p2[=w]` -> [(url, weight)], as OpenSIPS's add_rtpengine_socks."""
    out = []
    for item in text.split():
        url, sep, weight = item.partition("=")
        w = 1
        if sep:
            try:
                w = int(weight)
            except ValueError:
                raise SetError(f"{item!r}: bad weight") from None
            if w < 0:
                raise SetError(f"{item!r}: negative weight")
        parse_socket(url)
        out.append((url, w))
    return out


def parse_set_definition(text: str) -> tuple[int, list[tuple[str, int]]]:
    """`"1 == udp:h:p=2 udp:h2:p2"` -> (1, [...]); without `==` the default set 0."""
    head, sep, rest = text.partition("==")
    if sep:
        try:
            set_id = int(head.strip())
        except ValueError:
            raise SetError(f"{text!r}: bad set id") from None
        if set_id < 0:
            raise SetError(f"{text!r}: bad set id")
    else:
        set_id, rest = DEFAULT_SET, text
    sockets = parse_sockets(rest)
    if not sockets:
        raise SetError(f"{text!r}: empty rtpengine list")
    return set_id, sockets


def _unit(key: bytes, seed: bytes) -> float:
    """A number uniform in (0, 1) from (key, seed)."""
    digest = hashlib.blake2b(key, digest_size=8, key=seed[:64]).digest()
    return (int.from_bytes(digest, "big") + 0.5) / 18446744073709551616.0


def _score(engine: Engine, key: bytes) -> float:
    if engine.weight <= 0:
        return -1.0  # never chosen while another instance has a weight
    return engine.weight / -math.log(_unit(key, engine.seed))


@dataclass
class EngineSets:
    """Every set and instance, their state, and the choice of an instance per call."""

    disable_timeout: float = 60.0
    sets: dict[int, list[Engine]] = field(default_factory=dict)

    def engines(self) -> Iterable[Engine]:
        for engines in self.sets.values():
            yield from engines

    def find(self, set_id: int, url: str) -> Engine | None:
        for engine in self.sets.get(set_id, ()):
            if engine.url == url:
                return engine
        return None

    def find_any(self, url: str) -> Engine | None:
        for engine in self.engines():
            if engine.url == url:
                return engine
        return None

    def load(self, definitions: Iterable[tuple[int, str]]) -> None:
        """Replace the sets with `(set_id, "udp:h:p[=w] ...")` rows, as a reload does: an
        instance still defined keeps its state (a disabled one stays disabled); every
        instance is numbered in order (rtpengine_show's `index`)."""
        old = {(e.set_id, e.url): e for e in self.engines()}
        sets: dict[int, list[Engine]] = {}
        index = 0
        for set_id, text in definitions:
            for url, weight in parse_sockets(text):
                engines = sets.setdefault(set_id, [])
                if any(e.url == url for e in engines):
                    continue  # OpenSIPS: "node already exists in set", not added twice
                host, port = parse_socket(url)
                engine = Engine(url, host, port, weight, set_id, index, seed=url.encode())
                previous = old.get((set_id, url))
                if previous is not None:
                    engine.disabled = previous.disabled
                    engine.recheck_at = previous.recheck_at
                engines.append(engine)
                index += 1
        self.sets = sets

    # -- choice ---------------------------------------------------------------------------
    def home(self, set_id: int, key: str) -> Engine | None:
        """The call's instance when every instance of the set is up."""
        engines = self.sets.get(set_id)
        if not engines:
            return None
        k = key.encode()
        return max(engines, key=lambda e: _score(e, k))

    def select(self, set_id: int, key: str, *, exclude: Iterable[Engine] = ()) -> Engine | None:
        """The call's instance among the enabled ones (None: none is enabled)."""
        skip = {id(e) for e in exclude}
        k = key.encode()
        best: Engine | None = None
        best_score = -2.0
        for engine in self.sets.get(set_id, ()):
            if engine.disabled or id(engine) in skip:
                continue
            score = _score(engine, k)
            if score > best_score:
                best, best_score = engine, score
        return best

    # -- state ----------------------------------------------------------------------------
    def failed(self, engine: Engine, now: float) -> StatusChange | None:
        """`engine` did not answer: disabled until `now + disable_timeout`."""
        was = engine.disabled
        engine.disabled = True
        if engine.recheck_at != FOREVER:
            engine.recheck_at = now + self.disable_timeout
        return None if was else StatusChange(engine.url, engine.set_id, False)

    def answered(self, engine: Engine) -> StatusChange | None:
        """`engine` answered (a ping, a command): enabled, unless disabled by MI."""
        if not engine.disabled or engine.recheck_at == FOREVER:
            return None
        engine.disabled = False
        engine.recheck_at = 0.0
        return StatusChange(engine.url, engine.set_id, True)

    def due_rechecks(self, now: float) -> list[Engine]:
        """Disabled instances whose recheck time has come (ping them)."""
        return [e for e in self.engines() if e.disabled and e.recheck_at <= now]

    def mi_enable(self, url: str, enable: bool, set_id: int | None = None
                  ) -> tuple[bool, list[StatusChange]]:
        """`rtpengine_enable url 0|1 [setid]`: every instance with that url (in that set).
        (found, changes)."""
        found = False
        changes: list[StatusChange] = []
        for engine in self.engines():
            if engine.url != url or (set_id is not None and engine.set_id != set_id):
                continue
            found = True
            was = engine.disabled
            engine.disabled = not enable
            engine.recheck_at = 0.0 if enable else FOREVER
            if was != engine.disabled:
                changes.append(StatusChange(engine.url, engine.set_id, enable))
        return found, changes

    def recheck_ticks(self, engine: Engine, now: float) -> int:
        """rtpengine_show's `recheck_ticks`: 0 when enabled, seconds to the next ping when
        disabled, MAX_RECHECK_TICKS when disabled by MI."""
        if not engine.disabled:
            return 0
        if engine.recheck_at == FOREVER:
            return MAX_RECHECK_TICKS
        return max(0, math.ceil(engine.recheck_at - now))

    def show(self, now: float) -> list[dict[str, object]]:
        """The rtpengine_show answer (OpenSIPS 3 JSON shape)."""
        return [{"Set": set_id, "Nodes": [
            {"url": e.url, "index": e.index, "disabled": int(e.disabled), "weight": e.weight,
             "recheck_ticks": self.recheck_ticks(e, now)} for e in engines]}
            for set_id, engines in sorted(self.sets.items())]
