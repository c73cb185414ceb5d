from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class MediaRequest(_message.Message):
    __slots__ = ("call_id", "from_tag", "to_tag", "reply", "sdp", "flags", "set_id", "instance", "received_from", "via_branches")
    CALL_ID_FIELD_NUMBER: _ClassVar[int]
    FROM_TAG_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    REPLY_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    FLAGS_FIELD_NUMBER: _ClassVar[int]
    SET_ID_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_FROM_FIELD_NUMBER: _ClassVar[int]
    VIA_BRANCHES_FIELD_NUMBER: _ClassVar[int]
    call_id: str
    from_tag: str
    to_tag: str
    reply: bool
    sdp: bytes
    flags: str
    set_id: int
    instance: str
    received_from: str
    via_branches: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, call_id: _Optional[str] = ..., from_tag: _Optional[str] = ..., to_tag: _Optional[str] = ..., reply: _Optional[bool] = ..., sdp: _Optional[bytes] = ..., flags: _Optional[str] = ..., set_id: _Optional[int] = ..., instance: _Optional[str] = ..., received_from: _Optional[str] = ..., via_branches: _Optional[_Iterable[str]] = ...) -> None: ...

class MediaReply(_message.Message):
    __slots__ = ("ok", "sdp", "instance", "error", "warning", "to_tag", "from_tags")
    OK_FIELD_NUMBER: _ClassVar[int]
    SDP_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    FROM_TAGS_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    sdp: bytes
    instance: str
    error: str
    warning: str
    to_tag: str
    from_tags: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ok: _Optional[bool] = ..., sdp: _Optional[bytes] = ..., instance: _Optional[str] = ..., error: _Optional[str] = ..., warning: _Optional[str] = ..., to_tag: _Optional[str] = ..., from_tags: _Optional[_Iterable[str]] = ...) -> None: ...

class MosStats(_message.Message):
    __slots__ = ("mos_average", "mos_min", "mos_min_at", "mos_max", "mos_max_at")
    MOS_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    MOS_MIN_FIELD_NUMBER: _ClassVar[int]
    MOS_MIN_AT_FIELD_NUMBER: _ClassVar[int]
    MOS_MAX_FIELD_NUMBER: _ClassVar[int]
    MOS_MAX_AT_FIELD_NUMBER: _ClassVar[int]
    mos_average: int
    mos_min: int
    mos_min_at: int
    mos_max: int
    mos_max_at: int
    def __init__(self, mos_average: _Optional[int] = ..., mos_min: _Optional[int] = ..., mos_min_at: _Optional[int] = ..., mos_max: _Optional[int] = ..., mos_max_at: _Optional[int] = ...) -> None: ...

class CallStats(_message.Message):
    __slots__ = ("mos", "jitter_average", "roundtrip_average", "packetloss_average", "packets_lost", "rtp_packets", "rtp_bytes", "rtp_errors", "rtcp_packets", "rtcp_bytes", "rtcp_errors", "by_tag")
    class ByTagEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MosStats
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MosStats, _Mapping]] = ...) -> None: ...
    MOS_FIELD_NUMBER: _ClassVar[int]
    JITTER_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    ROUNDTRIP_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    PACKETLOSS_AVERAGE_FIELD_NUMBER: _ClassVar[int]
    PACKETS_LOST_FIELD_NUMBER: _ClassVar[int]
    RTP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTP_BYTES_FIELD_NUMBER: _ClassVar[int]
    RTP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    RTCP_PACKETS_FIELD_NUMBER: _ClassVar[int]
    RTCP_BYTES_FIELD_NUMBER: _ClassVar[int]
    RTCP_ERRORS_FIELD_NUMBER: _ClassVar[int]
    BY_TAG_FIELD_NUMBER: _ClassVar[int]
    mos: MosStats
    jitter_average: int
    roundtrip_average: int
    packetloss_average: int
    packets_lost: int
    rtp_packets: int
    rtp_bytes: int
    rtp_errors: int
    rtcp_packets: int
    rtcp_bytes: int
    rtcp_errors: int
    by_tag: _containers.MessageMap[str, MosStats]
    def __init__(self, mos: _Optional[_Union[MosStats, _Mapping]] = ..., jitter_average: _Optional[int] = ..., roundtrip_average: _Optional[int] = ..., packetloss_average: _Optional[int] = ..., packets_lost: _Optional[int] = ..., rtp_packets: _Optional[int] = ..., rtp_bytes: _Optional[int] = ..., rtp_errors: _Optional[int] = ..., rtcp_packets: _Optional[int] = ..., rtcp_bytes: _Optional[int] = ..., rtcp_errors: _Optional[int] = ..., by_tag: _Optional[_Mapping[str, MosStats]] = ...) -> None: ...

class DeleteReply(_message.Message):
    __slots__ = ("ok", "instance", "error", "warning", "stats", "json")
    OK_FIELD_NUMBER: _ClassVar[int]
    INSTANCE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    WARNING_FIELD_NUMBER: _ClassVar[int]
    STATS_FIELD_NUMBER: _ClassVar[int]
    JSON_FIELD_NUMBER: _ClassVar[int]
    ok: bool
    instance: str
    error: str
    warning: str
    stats: CallStats
    json: str
    def __init__(self, ok: _Optional[bool] = ..., instance: _Optional[str] = ..., error: _Optional[str] = ..., warning: _Optional[str] = ..., stats: _Optional[_Union[CallStats, _Mapping]] = ..., json: _Optional[str] = ...) -> None: ...
