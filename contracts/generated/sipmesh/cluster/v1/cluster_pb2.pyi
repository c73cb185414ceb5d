from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Frame(_message.Message):
    __slots__ = ("hello", "welcome", "packets", "auth", "seq", "body", "mac")
    HELLO_FIELD_NUMBER: _ClassVar[int]
    WELCOME_FIELD_NUMBER: _ClassVar[int]
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    AUTH_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    hello: Hello
    welcome: Welcome
    packets: _containers.RepeatedCompositeFieldContainer[Packet]
    auth: Auth
    seq: int
    body: bytes
    mac: bytes
    def __init__(self, hello: _Optional[_Union[Hello, _Mapping]] = ..., welcome: _Optional[_Union[Welcome, _Mapping]] = ..., packets: _Optional[_Iterable[_Union[Packet, _Mapping]]] = ..., auth: _Optional[_Union[Auth, _Mapping]] = ..., seq: _Optional[int] = ..., body: _Optional[bytes] = ..., mac: _Optional[bytes] = ...) -> None: ...

class Sealed(_message.Message):
    __slots__ = ("packets",)
    PACKETS_FIELD_NUMBER: _ClassVar[int]
    packets: _containers.RepeatedCompositeFieldContainer[Packet]
    def __init__(self, packets: _Optional[_Iterable[_Union[Packet, _Mapping]]] = ...) -> None: ...

class Hello(_message.Message):
    __slots__ = ("cluster_id", "node_id", "timestamp_ms", "nonce", "mac", "info", "to_node")
    CLUSTER_ID_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    INFO_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    cluster_id: int
    node_id: int
    timestamp_ms: int
    nonce: bytes
    mac: bytes
    info: NodeInfo
    to_node: int
    def __init__(self, cluster_id: _Optional[int] = ..., node_id: _Optional[int] = ..., timestamp_ms: _Optional[int] = ..., nonce: _Optional[bytes] = ..., mac: _Optional[bytes] = ..., info: _Optional[_Union[NodeInfo, _Mapping]] = ..., to_node: _Optional[int] = ...) -> None: ...

class Welcome(_message.Message):
    __slots__ = ("node_id", "mac", "nonce")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    MAC_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    mac: bytes
    nonce: bytes
    def __init__(self, node_id: _Optional[int] = ..., mac: _Optional[bytes] = ..., nonce: _Optional[bytes] = ...) -> None: ...

class Auth(_message.Message):
    __slots__ = ("mac",)
    MAC_FIELD_NUMBER: _ClassVar[int]
    mac: bytes
    def __init__(self, mac: _Optional[bytes] = ...) -> None: ...

class Packet(_message.Message):
    __slots__ = ("src", "dst", "ttl", "ping", "pong", "state", "msg", "sync_req", "sync", "sync_end", "mi", "yield_tag", "acks", "digest", "repair")
    SRC_FIELD_NUMBER: _ClassVar[int]
    DST_FIELD_NUMBER: _ClassVar[int]
    TTL_FIELD_NUMBER: _ClassVar[int]
    PING_FIELD_NUMBER: _ClassVar[int]
    PONG_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    MSG_FIELD_NUMBER: _ClassVar[int]
    SYNC_REQ_FIELD_NUMBER: _ClassVar[int]
    SYNC_FIELD_NUMBER: _ClassVar[int]
    SYNC_END_FIELD_NUMBER: _ClassVar[int]
    MI_FIELD_NUMBER: _ClassVar[int]
    YIELD_TAG_FIELD_NUMBER: _ClassVar[int]
    ACKS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    REPAIR_FIELD_NUMBER: _ClassVar[int]
    src: int
    dst: int
    ttl: int
    ping: Ping
    pong: Pong
    state: NodeInfo
    msg: Generic
    sync_req: SyncRequest
    sync: SyncChunk
    sync_end: SyncEnd
    mi: MiCommand
    yield_tag: ShtagYield
    acks: Acks
    digest: Digest
    repair: Repair
    def __init__(self, src: _Optional[int] = ..., dst: _Optional[int] = ..., ttl: _Optional[int] = ..., ping: _Optional[_Union[Ping, _Mapping]] = ..., pong: _Optional[_Union[Pong, _Mapping]] = ..., state: _Optional[_Union[NodeInfo, _Mapping]] = ..., msg: _Optional[_Union[Generic, _Mapping]] = ..., sync_req: _Optional[_Union[SyncRequest, _Mapping]] = ..., sync: _Optional[_Union[SyncChunk, _Mapping]] = ..., sync_end: _Optional[_Union[SyncEnd, _Mapping]] = ..., mi: _Optional[_Union[MiCommand, _Mapping]] = ..., yield_tag: _Optional[_Union[ShtagYield, _Mapping]] = ..., acks: _Optional[_Union[Acks, _Mapping]] = ..., digest: _Optional[_Union[Digest, _Mapping]] = ..., repair: _Optional[_Union[Repair, _Mapping]] = ...) -> None: ...

class Ping(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class Pong(_message.Message):
    __slots__ = ("seq",)
    SEQ_FIELD_NUMBER: _ClassVar[int]
    seq: int
    def __init__(self, seq: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "seq", "url", "sip_addr", "priority", "seed", "enabled", "up", "caps", "shtag_claims", "description", "incarnation")
    class CapsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: bool
        def __init__(self, key: _Optional[str] = ..., value: _Optional[bool] = ...) -> None: ...
    class ShtagClaimsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    URL_FIELD_NUMBER: _ClassVar[int]
    SIP_ADDR_FIELD_NUMBER: _ClassVar[int]
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    ENABLED_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    CAPS_FIELD_NUMBER: _ClassVar[int]
    SHTAG_CLAIMS_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    INCARNATION_FIELD_NUMBER: _ClassVar[int]
    node_id: int
    seq: int
    url: str
    sip_addr: str
    priority: int
    seed: bool
    enabled: bool
    up: _containers.RepeatedScalarFieldContainer[int]
    caps: _containers.ScalarMap[str, bool]
    shtag_claims: _containers.ScalarMap[str, int]
    description: str
    incarnation: int
    def __init__(self, node_id: _Optional[int] = ..., seq: _Optional[int] = ..., url: _Optional[str] = ..., sip_addr: _Optional[str] = ..., priority: _Optional[int] = ..., seed: _Optional[bool] = ..., enabled: _Optional[bool] = ..., up: _Optional[_Iterable[int]] = ..., caps: _Optional[_Mapping[str, bool]] = ..., shtag_claims: _Optional[_Mapping[str, int]] = ..., description: _Optional[str] = ..., incarnation: _Optional[int] = ...) -> None: ...

class Generic(_message.Message):
    __slots__ = ("cap", "payload", "ack_id")
    CAP_FIELD_NUMBER: _ClassVar[int]
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    ACK_ID_FIELD_NUMBER: _ClassVar[int]
    cap: str
    payload: bytes
    ack_id: int
    def __init__(self, cap: _Optional[str] = ..., payload: _Optional[bytes] = ..., ack_id: _Optional[int] = ...) -> None: ...

class Acks(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, ids: _Optional[_Iterable[int]] = ...) -> None: ...

class Digest(_message.Message):
    __slots__ = ("cap", "buckets")
    CAP_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    cap: str
    buckets: bytes
    def __init__(self, cap: _Optional[str] = ..., buckets: _Optional[bytes] = ...) -> None: ...

class Repair(_message.Message):
    __slots__ = ("cap", "records", "want", "last")
    CAP_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    WANT_FIELD_NUMBER: _ClassVar[int]
    LAST_FIELD_NUMBER: _ClassVar[int]
    cap: str
    records: _containers.RepeatedScalarFieldContainer[bytes]
    want: _containers.RepeatedScalarFieldContainer[int]
    last: bool
    def __init__(self, cap: _Optional[str] = ..., records: _Optional[_Iterable[bytes]] = ..., want: _Optional[_Iterable[int]] = ..., last: _Optional[bool] = ...) -> None: ...

class SyncRequest(_message.Message):
    __slots__ = ("cap", "sync_id")
    CAP_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    cap: str
    sync_id: int
    def __init__(self, cap: _Optional[str] = ..., sync_id: _Optional[int] = ...) -> None: ...

class SyncChunk(_message.Message):
    __slots__ = ("cap", "sync_id", "records")
    CAP_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    cap: str
    sync_id: int
    records: _containers.RepeatedScalarFieldContainer[bytes]
    def __init__(self, cap: _Optional[str] = ..., sync_id: _Optional[int] = ..., records: _Optional[_Iterable[bytes]] = ...) -> None: ...

class SyncEnd(_message.Message):
    __slots__ = ("cap", "sync_id", "records")
    CAP_FIELD_NUMBER: _ClassVar[int]
    SYNC_ID_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    cap: str
    sync_id: int
    records: int
    def __init__(self, cap: _Optional[str] = ..., sync_id: _Optional[int] = ..., records: _Optional[int] = ...) -> None: ...

class MiCommand(_message.Message):
    __slots__ = ("cmd", "params_json")
    CMD_FIELD_NUMBER: _ClassVar[int]
    PARAMS_JSON_FIELD_NUMBER: _ClassVar[int]
    cmd: str
    params_json: str
    def __init__(self, cmd: _Optional[str] = ..., params_json: _Optional[str] = ...) -> None: ...

class ShtagYield(_message.Message):
    __slots__ = ("tag", "to_node")
    TAG_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    tag: str
    to_node: int
    def __init__(self, tag: _Optional[str] = ..., to_node: _Optional[int] = ...) -> None: ...
