from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SaveRequest(_message.Message):
    __slots__ = ("message", "source_host", "source_port", "transport", "socket", "retry", "digest")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_HOST_FIELD_NUMBER: _ClassVar[int]
    SOURCE_PORT_FIELD_NUMBER: _ClassVar[int]
    TRANSPORT_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    RETRY_FIELD_NUMBER: _ClassVar[int]
    DIGEST_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    source_host: str
    source_port: int
    transport: str
    socket: str
    retry: bool
    digest: Digest
    def __init__(self, message: _Optional[bytes] = ..., source_host: _Optional[str] = ..., source_port: _Optional[int] = ..., transport: _Optional[str] = ..., socket: _Optional[str] = ..., retry: _Optional[bool] = ..., digest: _Optional[_Union[Digest, _Mapping]] = ...) -> None: ...

class Digest(_message.Message):
    __slots__ = ("username", "realm", "nonce", "uri", "response", "algorithm", "qop", "nc", "cnonce")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    REALM_FIELD_NUMBER: _ClassVar[int]
    NONCE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    RESPONSE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    QOP_FIELD_NUMBER: _ClassVar[int]
    NC_FIELD_NUMBER: _ClassVar[int]
    CNONCE_FIELD_NUMBER: _ClassVar[int]
    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str
    nc: str
    cnonce: str
    def __init__(self, username: _Optional[str] = ..., realm: _Optional[str] = ..., nonce: _Optional[str] = ..., uri: _Optional[str] = ..., response: _Optional[str] = ..., algorithm: _Optional[str] = ..., qop: _Optional[str] = ..., nc: _Optional[str] = ..., cnonce: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SaveReply(_message.Message):
    __slots__ = ("status", "reason", "headers", "digest_rejected")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    DIGEST_REJECTED_FIELD_NUMBER: _ClassVar[int]
    status: int
    reason: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    digest_rejected: bool
    def __init__(self, status: _Optional[int] = ..., reason: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., digest_rejected: _Optional[bool] = ...) -> None: ...

class LookupRequest(_message.Message):
    __slots__ = ("aor", "method", "max_latency_us", "by_latency", "federated")
    AOR_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    MAX_LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    BY_LATENCY_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_FIELD_NUMBER: _ClassVar[int]
    aor: str
    method: str
    max_latency_us: int
    by_latency: bool
    federated: bool
    def __init__(self, aor: _Optional[str] = ..., method: _Optional[str] = ..., max_latency_us: _Optional[int] = ..., by_latency: _Optional[bool] = ..., federated: _Optional[bool] = ...) -> None: ...

class Branch(_message.Message):
    __slots__ = ("uri", "next_hop", "q", "path", "instance", "latency_us", "federated")
    URI_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    Q_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_US_FIELD_NUMBER: _ClassVar[int]
    FEDERATED_FIELD_NUMBER: _ClassVar[int]
    uri: str
    next_hop: str
    q: float
    path: _containers.RepeatedScalarFieldContainer[str]
    instance: str
    latency_us: int
    federated: bool
    def __init__(self, uri: _Optional[str] = ..., next_hop: _Optional[str] = ..., q: _Optional[float] = ..., path: _Optional[_Iterable[str]] = ..., instance: _Optional[str] = ..., latency_us: _Optional[int] = ..., federated: _Optional[bool] = ...) -> None: ...

class LookupReply(_message.Message):
    __slots__ = ("status", "branches")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    BRANCHES_FIELD_NUMBER: _ClassVar[int]
    status: int
    branches: _containers.RepeatedCompositeFieldContainer[Branch]
    def __init__(self, status: _Optional[int] = ..., branches: _Optional[_Iterable[_Union[Branch, _Mapping]]] = ...) -> None: ...

class CredentialsRequest(_message.Message):
    __slots__ = ("username", "domain")
    USERNAME_FIELD_NUMBER: _ClassVar[int]
    DOMAIN_FIELD_NUMBER: _ClassVar[int]
    username: str
    domain: str
    def __init__(self, username: _Optional[str] = ..., domain: _Optional[str] = ...) -> None: ...

class CredentialsReply(_message.Message):
    __slots__ = ("found", "ha1", "ha1_sha256")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    HA1_FIELD_NUMBER: _ClassVar[int]
    HA1_SHA256_FIELD_NUMBER: _ClassVar[int]
    found: bool
    ha1: str
    ha1_sha256: str
    def __init__(self, found: _Optional[bool] = ..., ha1: _Optional[str] = ..., ha1_sha256: _Optional[str] = ...) -> None: ...

class SessionRequest(_message.Message):
    __slots__ = ("id", "save", "lookup", "credentials", "save_with_digest")
    ID_FIELD_NUMBER: _ClassVar[int]
    SAVE_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    SAVE_WITH_DIGEST_FIELD_NUMBER: _ClassVar[int]
    id: int
    save: SaveRequest
    lookup: LookupRequest
    credentials: CredentialsRequest
    save_with_digest: SaveRequest
    def __init__(self, id: _Optional[int] = ..., save: _Optional[_Union[SaveRequest, _Mapping]] = ..., lookup: _Optional[_Union[LookupRequest, _Mapping]] = ..., credentials: _Optional[_Union[CredentialsRequest, _Mapping]] = ..., save_with_digest: _Optional[_Union[SaveRequest, _Mapping]] = ...) -> None: ...

class SessionReply(_message.Message):
    __slots__ = ("id", "save", "lookup", "credentials", "save_with_digest", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    SAVE_FIELD_NUMBER: _ClassVar[int]
    LOOKUP_FIELD_NUMBER: _ClassVar[int]
    CREDENTIALS_FIELD_NUMBER: _ClassVar[int]
    SAVE_WITH_DIGEST_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    save: SaveReply
    lookup: LookupReply
    credentials: CredentialsReply
    save_with_digest: SaveReply
    error: str
    def __init__(self, id: _Optional[int] = ..., save: _Optional[_Union[SaveReply, _Mapping]] = ..., lookup: _Optional[_Union[LookupReply, _Mapping]] = ..., credentials: _Optional[_Union[CredentialsReply, _Mapping]] = ..., save_with_digest: _Optional[_Union[SaveReply, _Mapping]] = ..., error: _Optional[str] = ...) -> None: ...

class SessionRequests(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[SessionRequest]
    def __init__(self, calls: _Optional[_Iterable[_Union[SessionRequest, _Mapping]]] = ...) -> None: ...

class SessionReplies(_message.Message):
    __slots__ = ("replies",)
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    replies: _containers.RepeatedCompositeFieldContainer[SessionReply]
    def __init__(self, replies: _Optional[_Iterable[_Union[SessionReply, _Mapping]]] = ...) -> None: ...
