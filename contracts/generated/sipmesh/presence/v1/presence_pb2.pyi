from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SipRequest(_message.Message):
    __slots__ = ("message", "source", "local_contact", "edge_uac", "to_tag", "sharing_tag")
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    LOCAL_CONTACT_FIELD_NUMBER: _ClassVar[int]
    EDGE_UAC_FIELD_NUMBER: _ClassVar[int]
    TO_TAG_FIELD_NUMBER: _ClassVar[int]
    SHARING_TAG_FIELD_NUMBER: _ClassVar[int]
    message: bytes
    source: str
    local_contact: str
    edge_uac: str
    to_tag: str
    sharing_tag: str
    def __init__(self, message: _Optional[bytes] = ..., source: _Optional[str] = ..., local_contact: _Optional[str] = ..., edge_uac: _Optional[str] = ..., to_tag: _Optional[str] = ..., sharing_tag: _Optional[str] = ...) -> None: ...

class Header(_message.Message):
    __slots__ = ("name", "value")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    name: str
    value: str
    def __init__(self, name: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class SipAnswer(_message.Message):
    __slots__ = ("status", "reason", "headers")
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    HEADERS_FIELD_NUMBER: _ClassVar[int]
    status: int
    reason: str
    headers: _containers.RepeatedCompositeFieldContainer[Header]
    def __init__(self, status: _Optional[int] = ..., reason: _Optional[str] = ..., headers: _Optional[_Iterable[_Union[Header, _Mapping]]] = ...) -> None: ...
