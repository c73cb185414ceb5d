from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TrackRequests(_message.Message):
    __slots__ = ("stream_id", "events", "queries")
    STREAM_ID_FIELD_NUMBER: _ClassVar[int]
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    QUERIES_FIELD_NUMBER: _ClassVar[int]
    stream_id: str
    events: _containers.RepeatedCompositeFieldContainer[DialogEvent]
    queries: _containers.RepeatedCompositeFieldContainer[Query]
    def __init__(self, stream_id: _Optional[str] = ..., events: _Optional[_Iterable[_Union[DialogEvent, _Mapping]]] = ..., queries: _Optional[_Iterable[_Union[Query, _Mapping]]] = ...) -> None: ...

class TrackReplies(_message.Message):
    __slots__ = ("acked", "replies")
    ACKED_FIELD_NUMBER: _ClassVar[int]
    REPLIES_FIELD_NUMBER: _ClassVar[int]
    acked: int
    replies: _containers.RepeatedCompositeFieldContainer[QueryReply]
    def __init__(self, acked: _Optional[int] = ..., replies: _Optional[_Iterable[_Union[QueryReply, _Mapping]]] = ...) -> None: ...

class DialogEvent(_message.Message):
    __slots__ = ("seq", "time_ms", "create", "reply", "request")
    SEQ_FIELD_NUMBER: _ClassVar[int]
    TIME_MS_FIELD_NUMBER: _ClassVar[int]
    CREATE_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_FIELD_NUMBER: _ClassVar[int]
    seq: int
    time_ms: int
    create: Create
    reply: Reply
    request: InDialog
    def __init__(self, seq: _Optional[int] = ..., time_ms: _Optional[int] = ..., create: _Optional[_Union[Create, _Mapping]] = ..., reply: _Optional[_Union[Reply, _Mapping]] = ..., request: _Optional[_Union[InDialog, _Mapping]] = ...) -> None: ...

class Create(_message.Message):
    __slots__ = ("callid", "from_tag", "from_hdr", "to_hdr", "ruri", "cseq", "contact", "source", "socket", "destination", "edge_addrs", "edge_uac", "timeout", "profiles", "extra", "sharing_tag", "no_cdr", "timeout_set")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    FROM_HDR_FIELD_NUMBER: _ClassVar[int]
    TO_HDR_FIELD_NUMBER: _ClassVar[int]
    RURI_FIELD_NUMBER: _ClassVar[int]
    CSEQ_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    EDGE_ADDRS_FIELD_NUMBER: _ClassVar[int]
    EDGE_UAC_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SHARING_TAG_FIELD_NUMBER: _ClassVar[int]
    NO_CDR_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SET_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    from_hdr: str
    to_hdr: str
    ruri: str
    cseq: int
    contact: str
    source: str
    socket: str
    destination: str
    edge_addrs: _containers.RepeatedScalarFieldContainer[str]
    edge_uac: str
    timeout: int
    profiles: _containers.RepeatedCompositeFieldContainer[Profile]
    extra: _containers.ScalarMap[str, str]
    sharing_tag: str
    no_cdr: bool
    timeout_set: bool
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ..., from_hdr: _Optional[str] = ..., to_hdr: _Optional[str] = ..., ruri: _Optional[str] = ..., cseq: _Optional[int] = ..., contact: _Optional[str] = ..., source: _Optional[str] = ..., socket: _Optional[str] = ..., destination: _Optional[str] = ..., edge_addrs: _Optional[_Iterable[str]] = ..., edge_uac: _Optional[str] = ..., timeout: _Optional[int] = ..., profiles: _Optional[_Iterable[_Union[Profile, _Mapping]]] = ..., extra: _Optional[_Mapping[str, str]] = ..., sharing_tag: _Optional[str] = ..., no_cdr: _Optional[bool] = ..., timeout_set: _Optional[bool] = ...) -> None: ...

class Profile(_message.Message):
    __slots__ = ("name", "value", "has_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    has_value: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., has_value: _Optional[bool] = ...) -> None: ...

class Reply(_message.Message):
    __slots__ = ("callid", "from_tag", "to_tag", "status", "reason", "contact", "record_route", "source")
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    CONTACT_FIELD_NUMBER: _ClassVar[int]
    RECORD_ROUTE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    to_tag: str
    status: int
    reason: str
    contact: str
    record_route: _containers.RepeatedScalarFieldContainer[str]
    source: str
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ..., to_tag: _Optional[str] = ..., status: _Optional[int] = ..., reason: _Optional[str] = ..., contact: _Optional[str] = ..., record_route: _Optional[_Iterable[str]] = ..., source: _Optional[str] = ...) -> None: ...

class InDialog(_message.Message):
    __slots__ = ("callid", "from_tag", "to_tag", "method", "cseq")
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    METHOD_FIELD_NUMBER: _ClassVar[int]
    CSEQ_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    to_tag: str
    method: str
    cseq: int
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ..., to_tag: _Optional[str] = ..., method: _Optional[str] = ..., cseq: _Optional[int] = ...) -> None: ...

class Query(_message.Message):
    __slots__ = ("id", "size", "reserve")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    RESERVE_FIELD_NUMBER: _ClassVar[int]
    id: int
    size: ProfileQuery
    reserve: Reserve
    def __init__(self, id: _Optional[int] = ..., size: _Optional[_Union[ProfileQuery, _Mapping]] = ..., reserve: _Optional[_Union[Reserve, _Mapping]] = ...) -> None: ...

class Reserve(_message.Message):
    __slots__ = ("callid", "from_tag", "profile", "limit")
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    PROFILE_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    profile: Profile
    limit: int
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ..., profile: _Optional[_Union[Profile, _Mapping]] = ..., limit: _Optional[int] = ...) -> None: ...

class QueryReply(_message.Message):
    __slots__ = ("id", "size", "ok", "error")
    ID_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    OK_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: int
    size: int
    ok: bool
    error: str
    def __init__(self, id: _Optional[int] = ..., size: _Optional[int] = ..., ok: _Optional[bool] = ..., error: _Optional[str] = ...) -> None: ...

class DialogRef(_message.Message):
    __slots__ = ("callid", "from_tag")
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ...) -> None: ...

class SetExtraRequest(_message.Message):
    __slots__ = ("dialog", "extra")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    DIALOG_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    dialog: DialogRef
    extra: _containers.ScalarMap[str, str]
    def __init__(self, dialog: _Optional[_Union[DialogRef, _Mapping]] = ..., extra: _Optional[_Mapping[str, str]] = ...) -> None: ...

class SetExtraReply(_message.Message):
    __slots__ = ("found",)
    FOUND_FIELD_NUMBER: _ClassVar[int]
    found: bool
    def __init__(self, found: _Optional[bool] = ...) -> None: ...

class EndDialogRequest(_message.Message):
    __slots__ = ("dialog", "reason", "extra_headers")
    DIALOG_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    EXTRA_HEADERS_FIELD_NUMBER: _ClassVar[int]
    dialog: DialogRef
    reason: str
    extra_headers: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, dialog: _Optional[_Union[DialogRef, _Mapping]] = ..., reason: _Optional[str] = ..., extra_headers: _Optional[_Iterable[str]] = ...) -> None: ...

class EndDialogReply(_message.Message):
    __slots__ = ("found", "state")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    found: bool
    state: int
    def __init__(self, found: _Optional[bool] = ..., state: _Optional[int] = ...) -> None: ...

class DialogInfo(_message.Message):
    __slots__ = ("found", "json")
    FOUND_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    found: bool
    json: str
    def __init__(self, found: _Optional[bool] = ..., json: _Optional[str] = ...) -> None: ...

class ProfileQuery(_message.Message):
    __slots__ = ("name", "value", "has_value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    HAS_VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    has_value: bool
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ..., has_value: _Optional[bool] = ...) -> None: ...

class ProfileSizeReply(_message.Message):
    __slots__ = ("size",)
    SIZE_FIELD_NUMBER: _ClassVar[int]
    size: int
    def __init__(self, size: _Optional[int] = ...) -> None: ...

class DialogRecord(_message.Message):
    __slots__ = ("callid", "from_tag", "to_tag", "h_entry", "h_id", "state", "version", "writer", "from_hdr", "to_hdr", "ruri", "caller_contact", "callee_contact", "caller_route", "callee_route", "caller_hop", "callee_hop", "caller_cseq", "callee_cseq", "socket", "source", "destination", "edge_addrs", "edge_uac", "created_ms", "answered_ms", "ended_ms", "timeout", "profiles", "extra", "sharing_tag", "sip_code", "sip_reason", "end_reason", "no_cdr", "cdr_done", "reserved", "hold_until_ms")
    class ExtraEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    CALLID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    H_ENTRY_FIELD_NUMBER: _ClassVar[int]
    H_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    WRITER_FIELD_NUMBER: _ClassVar[int]
    FROM_HDR_FIELD_NUMBER: _ClassVar[int]
    TO_HDR_FIELD_NUMBER: _ClassVar[int]
    RURI_FIELD_NUMBER: _ClassVar[int]
    CALLER_CONTACT_FIELD_NUMBER: _ClassVar[int]
    CALLEE_CONTACT_FIELD_NUMBER: _ClassVar[int]
    CALLER_ROUTE_FIELD_NUMBER: _ClassVar[int]
    CALLEE_ROUTE_FIELD_NUMBER: _ClassVar[int]
    CALLER_HOP_FIELD_NUMBER: _ClassVar[int]
    CALLEE_HOP_FIELD_NUMBER: _ClassVar[int]
    CALLER_CSEQ_FIELD_NUMBER: _ClassVar[int]
    CALLEE_CSEQ_FIELD_NUMBER: _ClassVar[int]
    SOCKET_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESTINATION_FIELD_NUMBER: _ClassVar[int]
    EDGE_ADDRS_FIELD_NUMBER: _ClassVar[int]
    EDGE_UAC_FIELD_NUMBER: _ClassVar[int]
    CREATED_MS_FIELD_NUMBER: _ClassVar[int]
    ANSWERED_MS_FIELD_NUMBER: _ClassVar[int]
    ENDED_MS_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_FIELD_NUMBER: _ClassVar[int]
    PROFILES_FIELD_NUMBER: _ClassVar[int]
    EXTRA_FIELD_NUMBER: _ClassVar[int]
    SHARING_TAG_FIELD_NUMBER: _ClassVar[int]
    SIP_CODE_FIELD_NUMBER: _ClassVar[int]
    SIP_REASON_FIELD_NUMBER: _ClassVar[int]
    END_REASON_FIELD_NUMBER: _ClassVar[int]
    NO_CDR_FIELD_NUMBER: _ClassVar[int]
    CDR_DONE_FIELD_NUMBER: _ClassVar[int]
    RESERVED_FIELD_NUMBER: _ClassVar[int]
    HOLD_UNTIL_MS_FIELD_NUMBER: _ClassVar[int]
    callid: str
    from_tag: str
    to_tag: str
    h_entry: int
    h_id: int
    state: int
    version: int
    writer: int
    from_hdr: str
    to_hdr: str
    ruri: str
    caller_contact: str
    callee_contact: str
    caller_route: _containers.RepeatedScalarFieldContainer[str]
    callee_route: _containers.RepeatedScalarFieldContainer[str]
    caller_hop: str
    callee_hop: str
    caller_cseq: int
    callee_cseq: int
    socket: str
    source: str
    destination: str
    edge_addrs: _containers.RepeatedScalarFieldContainer[str]
    edge_uac: str
    created_ms: int
    answered_ms: int
    ended_ms: int
    timeout: int
    profiles: _containers.RepeatedCompositeFieldContainer[Profile]
    extra: _containers.ScalarMap[str, str]
    sharing_tag: str
    sip_code: int
    sip_reason: str
    end_reason: str
    no_cdr: bool
    cdr_done: bool
    reserved: bool
    hold_until_ms: int
    def __init__(self, callid: _Optional[str] = ..., from_tag: _Optional[str] = ..., to_tag: _Optional[str] = ..., h_entry: _Optional[int] = ..., h_id: _Optional[int] = ..., state: _Optional[int] = ..., version: _Optional[int] = ..., writer: _Optional[int] = ..., from_hdr: _Optional[str] = ..., to_hdr: _Optional[str] = ..., ruri: _Optional[str] = ..., caller_contact: _Optional[str] = ..., callee_contact: _Optional[str] = ..., caller_route: _Optional[_Iterable[str]] = ..., callee_route: _Optional[_Iterable[str]] = ..., caller_hop: _Optional[str] = ..., callee_hop: _Optional[str] = ..., caller_cseq: _Optional[int] = ..., callee_cseq: _Optional[int] = ..., socket: _Optional[str] = ..., source: _Optional[str] = ..., destination: _Optional[str] = ..., edge_addrs: _Optional[_Iterable[str]] = ..., edge_uac: _Optional[str] = ..., created_ms: _Optional[int] = ..., answered_ms: _Optional[int] = ..., ended_ms: _Optional[int] = ..., timeout: _Optional[int] = ..., profiles: _Optional[_Iterable[_Union[Profile, _Mapping]]] = ..., extra: _Optional[_Mapping[str, str]] = ..., sharing_tag: _Optional[str] = ..., sip_code: _Optional[int] = ..., sip_reason: _Optional[str] = ..., end_reason: _Optional[str] = ..., no_cdr: _Optional[bool] = ..., cdr_done: _Optional[bool] = ..., reserved: _Optional[bool] = ..., hold_until_ms: _Optional[int] = ...) -> None: ...
