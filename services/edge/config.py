"""Configuration of the edge proxy: the `[edge]` section.

Embedded defaults make `python -m services.edge` run with no file: UDP and TCP on
127.0.0.1:5060, one worker, the default routing module, loopback trusted.  A TOML file
(`$SIPMESH_CONFIG`) or `SIPMESH_EDGE_*` variables override any field, e.g.
`SIPMESH_EDGE_LISTEN=udp:127.0.0.1:5070,tcp:127.0.0.1:5070`.

Static routes are written `key=uri` (key: `user@domain`, `user` or `domain`), for example
`static_routes = ["alice@example.com=sip:alice@192.0.2.10:5060", "example.com=sip:192.0.2.20"]`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.edge.addresses import Interface
from services.edge.tcp_limits import TcpLimits


class EdgeConfigError(ValueError):
    """A value of the [edge] section cannot be used."""


@dataclass(frozen=True)
class EdgeConfig:
    listen: tuple[str, ...] = ("udp:127.0.0.1:5060", "tcp:127.0.0.1:5060")
    # The address a listener on 0.0.0.0 (or ::) writes in Via and Record-Route; empty:
    # the local address of the default route.
    advertise: str = ""
    workers: int = 1
    t1: float = 0.5
    t2: float = 4.0
    t4: float = 5.0
    timer_c: float = 180.0
    routing_module: str = "services.edge.default_routing"
    local_domains: tuple[str, ...] = ()
    static_routes: tuple[str, ...] = ()
    trusted: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
    # Address permissions (services/edge/permissions.py): the `address` table in this
    # database ("" = [registrar] store, "none" = no table) trusts a source matching a row
    # of `trusted_group` (0 = any group), on top of `trusted`; MI address_reload re-reads.
    address_db: str = ""
    trusted_group: int = 0
    # Flood protection (services/edge/pike.py, OpenSIPS pike): an untrusted source sending
    # more than pike_density requests per pike_unit seconds (averaged over two units) is
    # blocked (its requests dropped) until it calms down; 0 turns it off.
    pike_unit: float = 2.0
    pike_density: int = 30
    pike_remove_latency: float = 120.0
    # Dispatcher to gateways (services/edge/dispatcher.py, OpenSIPS dispatcher): the
    # `dispatcher` table in ds_db ("" = [registrar] store, "none" = off); OPTIONS probing
    # every ds_ping_interval s (0: off) of Probing destinations (mode 0) or all (mode 1).
    ds_db: str = ""
    ds_ping_interval: float = 10.0
    ds_probing_mode: int = 0
    ds_probing_threshold: int = 1
    ds_ping_from: str = "sip:dispatcher@localhost"
    ds_options_reply_codes: tuple[str, ...] = ()
    # SIP capture (services/edge/siptrace.py, OpenSIPS siptrace): HEP v3 to hep_dest
    # (host:port UDP, host:port;transport=tcp, file:/x.pcap; "" = none); sip_trace is the
    # state at start (MI sip_trace).
    hep_dest: str = ""
    # Per-call tracing (services/edge/tracer.py, OpenSIPS tracer's trace_id): "name=URI"
    # destinations for ctx.trace(name) in routing (URIs as hep_dest).
    trace_ids: tuple[str, ...] = ()
    hep_capture_id: int = 1
    hep_auth_key: str = ""
    sip_trace: bool = False
    # Proxy authentication for untrusted sources: `name:password` entries, digest realm and
    # the nonce secret (empty: random per start; workers of one edge share the parent's).
    users: tuple[str, ...] = ()
    realm: str = "sipmesh"
    auth_secret: str = ""
    # Digest answers without qop (RFC 2069) can be replayed until their nonce expires:
    # refused unless allowed for old phones, and then each nonce serves once.
    auth_allow_rfc2069: bool = False
    # Key of the signature in our Record-Route (services/edge/rr_signing.py); every edge of
    # a mesh needs the same.  Empty: `auth_secret`, else a file in the state directory.
    rr_secret: str = ""
    # The registrar (services/registrar): fixed host:port gRPC addresses, or else the
    # discovery service name; REGISTER is challenged (401) with these digest algorithms.
    registrar: tuple[str, ...] = ()
    registrar_service: str = "registrar"
    # A registrar belongs to this deployment (found in discovery): while none is ready the
    # edge is not ready (/ready) and answers 503 for local users. false: an edge without
    # one (static routes, a relay, FreeSWITCH behind it): ready without it, and a local
    # user with no route is unknown (404). `sipmesh up` sets it false when its services
    # leave the registrar out (unless SIPMESH_EDGE_REGISTRAR_EXPECTED is set). A fixed
    # `registrar` list is always expected.
    registrar_expected: bool = True
    registrar_timeout: float = 1.0
    registrar_batch_ms: float = 3.0  # calls this close together share one gRPC message
    # REGISTER's Saves wait longer for company (a Lookup does not wait for them): ~30
    # per gRPC message at 500 REGISTER/s instead of ~1.5 with 3 ms (docs/perf.md, fifth
    # round) or ~14 with 20 ms (ninth round: -100 us of CPU per REGISTER over both
    # processes, the registrar's cost being mostly per message).
    register_batch_ms: float = 50.0
    register_auth: bool = True
    # The registrar verifies REGISTER's digest while it saves (one round trip); false: the
    # edge fetches the HA1 (GetCredentials) and checks it, as with an older registrar.
    register_digest_on_save: bool = True
    auth_algorithms: tuple[str, ...] = ("MD5",)
    # Lookup by ping latency (OpenSIPS lookup flags yNNN / Y): skip bindings above N us
    # (0: no limit), order branches fastest first instead of by q.
    lookup_max_latency_us: int = 0
    lookup_by_latency: bool = False
    # The media broker (services/media, rtpengine): fixed host:port gRPC addresses, or
    # else the discovery service name.  media_anchor: the default routing sends every
    # call's media through rtpengine (offer on INVITE, answer on 183/200, delete on BYE,
    # CANCEL and failure) with media_flags (OpenSIPS rtpengine flags) in set media_set.
    media: tuple[str, ...] = ()
    media_service: str = "media"
    # The presence service (PUBLISH/SUBSCRIBE for local domains): fixed host:port list, else
    # discovery (service `presence_service`); `presence_timeout` s per request.
    presence: tuple[str, ...] = ()
    presence_service: str = "presence"
    presence_timeout: float = 5.0
    media_timeout: float = 6.0  # above the broker's rtpengine_tout x rtpengine_retr (5 s)
    media_anchor: bool = False
    media_flags: str = "replace-origin replace-session-connection ICE=remove"
    media_set: int = 0
    # The dialog service (services/dialog): fixed host:port gRPC addresses, or else the
    # discovery service name. Record-routed INVITEs are tracked when one is known
    # (dialog_tracking); events wait in a buffer of dialog_buffer while it is away.
    dialog: tuple[str, ...] = ()
    dialog_service: str = "dialog"
    dialog_tracking: bool = True
    dialog_buffer: int = 10000
    dialog_timeout: float = 0.5  # s a profile query from routing may take
    dialog_batch_ms: float = 50.0  # events this close together share one stream message
    # SIPREC (services/siprec): where the recorder is (its MI URL or host:port; else
    # discovery), and siprec_srs: the default routing records every call there (an SRS
    # URI or a comma-separated failover list; needs media_anchor).
    siprec: tuple[str, ...] = ()
    siprec_service: str = "siprec"
    siprec_srs: str = ""
    siprec_token: str = ""  # the siprec service's MI bearer token (off loopback)
    # The Uac API (requests sent for other services: BYEs of the dialog service, ...).
    uac_host: str = "127.0.0.1"
    uac_port: int = 0
    uac_advertise: str = ""
    # Transport towards a next hop whose URI has no transport parameter: "inbound" keeps the
    # transport the request arrived on, "udp" follows RFC 3263 §4.1 for a numeric host.
    default_transport: str = "inbound"
    # TCP bounds (services/edge/tcp_limits.py): seconds, connection counts, bytes.
    tcp_idle_timeout: float = 3900.0
    tcp_header_timeout: float = 10.0
    tcp_max_connections: int = 2048
    tcp_max_per_ip: int = 64
    tcp_max_header: int = 32768
    tcp_max_body: int = 65536
    uvloop: bool = True
    http_host: str = "127.0.0.1"
    http_port: int = 0  # /metrics, /health, MI; 0 = ephemeral; worker i of N takes port + i
    http_advertise: str = ""  # host registered in discovery (default: http_host or 127.0.0.1)
    http_token: str = ""  # bearer token of MI (required when http_host is not loopback)
    log_level: str = "info"

    def interfaces(self) -> list[Interface]:
        out = []
        for item in self.listen:
            out.append(parse_listen(item))
        if not out:
            raise EdgeConfigError("[edge].listen is empty")
        return out

    def trusted_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        try:
            return [ipaddress.ip_network(n, strict=False) for n in self.trusted]
        except ValueError as exc:
            raise EdgeConfigError(f"[edge].trusted: {exc}") from exc

    def tcp_limits(self) -> TcpLimits:
        return TcpLimits(
            idle_timeout=self.tcp_idle_timeout, header_timeout=self.tcp_header_timeout,
            max_connections=self.tcp_max_connections, max_per_ip=self.tcp_max_per_ip,
            max_header=self.tcp_max_header, max_body=self.tcp_max_body)

    def user_table(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for item in self.users:
            name, sep, password = item.partition(":")
            if not sep or not name:
                raise EdgeConfigError(f"[edge].users: {item!r} is not name:password")
            table[name] = password
        return table

    def routes(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for item in self.static_routes:
            key, sep, uri = item.partition("=")
            if not sep or not key.strip() or not uri.strip():
                raise EdgeConfigError(f"[edge].static_routes: {item!r} is not key=uri")
            table[key.strip().lower()] = uri.strip()
        return table


def parse_listen(item: str) -> Interface:
    """`udp:127.0.0.1:5060`, `tcp:[::1]:5060`, `udp:10.0.0.1:5060;anycast` -> Interface."""
    item, _, flags = item.partition(";")
    anycast = flags.strip().lower() == "anycast"
    if flags and not anycast:
        raise EdgeConfigError(f"[edge].listen: unknown flag {flags!r} (only ;anycast)")
    transport, sep, rest = item.partition(":")
    transport = transport.lower()
    if not sep or transport not in ("udp", "tcp"):
        raise EdgeConfigError(f"[edge].listen: {item!r} must be udp:HOST:PORT or tcp:HOST:PORT")
    host, _, port = rest.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
        ipaddress.ip_address(host)
    except ValueError as exc:
        raise EdgeConfigError(f"[edge].listen: {item!r}: {exc}") from exc
    if not 0 <= number < 65536:
        raise EdgeConfigError(f"[edge].listen: port out of range in {item!r}")
    if anycast and transport != "udp":
        raise EdgeConfigError(f"[edge].listen: {item!r}: anycast is for UDP listeners only")
    return Interface(transport, host, number, anycast=anycast)


def load_config(path: str | Path | None = None, environ: dict[str, str] | None = None,
                **overrides: Any) -> EdgeConfig:
    """The [edge] section from defaults, file and environment (shared.config), then overrides."""
    from dataclasses import replace

    from shared.config import load_section

    config = load_section(EdgeConfig, "edge", path=path, environ=environ)
    if overrides:
        config = replace(config, **overrides)
    if config.workers < 1:
        raise EdgeConfigError("[edge].workers must be at least 1")
    if config.default_transport not in ("inbound", "udp", "tcp"):
        raise EdgeConfigError("[edge].default_transport must be inbound, udp or tcp")
    for name in ("tcp_idle_timeout", "tcp_header_timeout"):
        if getattr(config, name) <= 0:
            raise EdgeConfigError(f"[edge].{name} must be positive")
    for name in ("tcp_max_connections", "tcp_max_per_ip", "tcp_max_header", "tcp_max_body"):
        if getattr(config, name) < 1:
            raise EdgeConfigError(f"[edge].{name} must be at least 1")
    if config.trusted_group < 0:
        raise EdgeConfigError("[edge].trusted_group must be 0 (any group) or a group number")
    if config.pike_unit <= 0 or config.pike_density < 0 or config.pike_remove_latency <= 0:
        raise EdgeConfigError("[edge].pike_unit and pike_remove_latency must be positive, "
                              "pike_density at least 0")
    if config.ds_probing_mode not in (0, 1) or config.ds_ping_interval < 0:
        raise EdgeConfigError("[edge].ds_probing_mode must be 0 or 1, ds_ping_interval >= 0")
    if not all(c.strip().isdigit() for c in config.ds_options_reply_codes):
        raise EdgeConfigError("[edge].ds_options_reply_codes must be SIP status codes")
    from services.edge.capture_sinks import parse_uri
    from services.edge.tracer import parse_trace_ids

    try:
        if config.hep_dest:
            parse_uri(config.hep_dest)
        for uri in parse_trace_ids(config.trace_ids).values():
            parse_uri(uri)
    except ValueError as exc:
        raise EdgeConfigError(f"[edge] capture destination: {exc}") from exc
    config.interfaces()
    config.trusted_networks()
    config.routes()
    config.user_table()
    for algorithm in config.auth_algorithms:
        if algorithm.upper() not in ("MD5", "SHA-256", "SHA-512-256"):
            raise EdgeConfigError(f"[edge].auth_algorithms: unsupported {algorithm!r}")
    return config
