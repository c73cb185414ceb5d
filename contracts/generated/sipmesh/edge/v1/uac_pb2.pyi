from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class UacRequest(_message.Message):
    __slots__ = ("method", "ruri", "headers", "route", "next_hop", "body", "timeout", "no_auto_ack")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    RURI_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    ROUTE_FIELD_NUMBER: _ClassVar[int]
    NEXT_HOP_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    NO_AUTO_ACK_FIELD_NUMBER: _ClassVar[int]
    method: str
    ruri: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    route: _containers.RepeatedScalarFieldContainer[str]
    next_hop: str
    body: bytes
    timeout: float
    no_auto_ack: bool
    def __init__(self, method: _Optional[str] = ..., ruri: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., route: _Optional[_Iterable[str]] = ..., next_hop: _Optional[str] = ..., body: _Optional[bytes] = ..., timeout: _Optional[float] = ..., no_auto_ack: _Optional[bool] = ...) -> None: ...

class UacReply(_message.Message):
    __slots__ = ("status", "reason", "headers", "body", "error")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    status: int
    reason: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    body: bytes
    error: str
    def __init__(self, status: _Optional[int] = ..., reason: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ..., body: _Optional[bytes] = ..., error: _Optional[str] = ...) -> None: ...
