from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ApiRequest(_message.Message):
    __slots__ = ("box", "command")
    BOX_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    box: str
    command: str
    def __init__(self, box: _Optional[str] = ..., command: _Optional[str] = ...) -> None: ...

class ApiReply(_message.Message):
    __slots__ = ("code", "body", "error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    code: int
    body: str
    error: str
    def __init__(self, code: _Optional[int] = ..., body: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class BgApiRequest(_message.Message):
    __slots__ = ("box", "command", "wait")
    BOX_FIELD_NUMBER: _ClassVar[int]
    COMMAND_FIELD_NUMBER: _ClassVar[int]
    WAIT_FIELD_NUMBER: _ClassVar[int]
    box: str
    command: str
    wait: bool
    def __init__(self, box: _Optional[str] = ..., command: _Optional[str] = ..., wait: _Optional[bool] = ...) -> None: ...

class BgApiReply(_message.Message):
    __slots__ = ("code", "job_uuid", "body", "error")
    CODE_FIELD_NUMBER: _ClassVar[int]
    JOB_UUID_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    code: int
    job_uuid: str
    body: str
    error: str
    def __init__(self, code: _Optional[int] = ..., job_uuid: _Optional[str] = ..., body: _Optional[str] = ..., error: _Optional[str] = ...) -> None: ...

class WatchRequest(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, events: _Optional[_Iterable[str]] = ...) -> None: ...

class Box(_message.Message):
    __slots__ = ("id", "group", "sip_uri", "up", "session_count", "max_sessions", "idle_cpu", "heartbeat_age", "stale_after")
    ID_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    SIP_URI_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    SESSION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MAX_SESSIONS_FIELD_NUMBER: _ClassVar[int]
    IDLE_CPU_FIELD_NUMBER: _ClassVar[int]
    HEARTBEAT_AGE_FIELD_NUMBER: _ClassVar[int]
    STALE_AFTER_FIELD_NUMBER: _ClassVar[int]
    id: str
    group: str
    sip_uri: str
    up: bool
    session_count: int
    max_sessions: int
    idle_cpu: float
    heartbeat_age: float
    stale_after: float
    def __init__(self, id: _Optional[str] = ..., group: _Optional[str] = ..., sip_uri: _Optional[str] = ..., up: _Optional[bool] = ..., session_count: _Optional[int] = ..., max_sessions: _Optional[int] = ..., idle_cpu: _Optional[float] = ..., heartbeat_age: _Optional[float] = ..., stale_after: _Optional[float] = ...) -> None: ...

class Boxes(_message.Message):
    __slots__ = ("boxes", "policy", "max_weight")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    MAX_WEIGHT_FIELD_NUMBER: _ClassVar[int]
    boxes: _containers.RepeatedCompositeFieldContainer[Box]
    policy: str
    max_weight: float
    def __init__(self, boxes: _Optional[_Iterable[_Union[Box, _Mapping]]] = ..., policy: _Optional[str] = ..., max_weight: _Optional[float] = ...) -> None: ...

class FsEvent(_message.Message):
    __slots__ = ("name", "sender", "box", "body")
    NAME_FIELD_NUMBER: _ClassVar[int]
    SENDER_FIELD_NUMBER: _ClassVar[int]
    BOX_FIELD_NUMBER: _ClassVar[int]
    BODY_FIELD_NUMBER: _ClassVar[int]
    name: str
    sender: str
    box: str
    body: str
    def __init__(self, name: _Optional[str] = ..., sender: _Optional[str] = ..., box: _Optional[str] = ..., body: _Optional[str] = ...) -> None: ...

class WatchUpdate(_message.Message):
    __slots__ = ("boxes", "event")
    BOXES_FIELD_NUMBER: _ClassVar[int]
    EVENT_FIELD_NUMBER: _ClassVar[int]
    boxes: Boxes
    event: FsEvent
    def __init__(self, boxes: _Optional[_Union[Boxes, _Mapping]] = ..., event: _Optional[_Union[FsEvent, _Mapping]] = ...) -> None: ...
