import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TargetContent(_message.Message):
    __slots__ = ("path", "content")
    PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_FIELD_NUMBER: _ClassVar[int]
    path: str
    content: bytes
    def __init__(self, path: _Optional[str] = ..., content: _Optional[bytes] = ...) -> None: ...

class PushProvinceRoleRequest(_message.Message):
    __slots__ = ("province", "role_metadata", "targets", "unlisted")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    ROLE_METADATA_FIELD_NUMBER: _ClassVar[int]
    TARGETS_FIELD_NUMBER: _ClassVar[int]
    UNLISTED_FIELD_NUMBER: _ClassVar[int]
    province: str
    role_metadata: bytes
    targets: _containers.RepeatedCompositeFieldContainer[TargetContent]
    unlisted: _containers.RepeatedCompositeFieldContainer[TargetContent]
    def __init__(self, province: _Optional[str] = ..., role_metadata: _Optional[bytes] = ..., targets: _Optional[_Iterable[_Union[TargetContent, _Mapping]]] = ..., unlisted: _Optional[_Iterable[_Union[TargetContent, _Mapping]]] = ...) -> None: ...

class PushProvinceRoleResponse(_message.Message):
    __slots__ = ("version", "already_accepted", "accepted_at")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    ALREADY_ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    version: int
    already_accepted: bool
    accepted_at: _timestamp_pb2.Timestamp
    def __init__(self, version: _Optional[int] = ..., already_accepted: _Optional[bool] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class GetPublicationStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class PublicationStatus(_message.Message):
    __slots__ = ("now", "snapshot_version", "snapshot_expires", "timestamp_version", "timestamp_expires", "last_publication", "provinces")
    NOW_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_EXPIRES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_VERSION_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_EXPIRES_FIELD_NUMBER: _ClassVar[int]
    LAST_PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    PROVINCES_FIELD_NUMBER: _ClassVar[int]
    now: _timestamp_pb2.Timestamp
    snapshot_version: int
    snapshot_expires: _timestamp_pb2.Timestamp
    timestamp_version: int
    timestamp_expires: _timestamp_pb2.Timestamp
    last_publication: _timestamp_pb2.Timestamp
    provinces: _containers.RepeatedCompositeFieldContainer[ProvincePublication]
    def __init__(self, now: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot_version: _Optional[int] = ..., snapshot_expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., timestamp_version: _Optional[int] = ..., timestamp_expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., last_publication: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., provinces: _Optional[_Iterable[_Union[ProvincePublication, _Mapping]]] = ...) -> None: ...

class ProvincePublication(_message.Message):
    __slots__ = ("province", "published_version", "published_at", "accepted_version", "accepted_at", "role_expires")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_VERSION_FIELD_NUMBER: _ClassVar[int]
    PUBLISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_VERSION_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    ROLE_EXPIRES_FIELD_NUMBER: _ClassVar[int]
    province: str
    published_version: int
    published_at: _timestamp_pb2.Timestamp
    accepted_version: int
    accepted_at: _timestamp_pb2.Timestamp
    role_expires: _timestamp_pb2.Timestamp
    def __init__(self, province: _Optional[str] = ..., published_version: _Optional[int] = ..., published_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., accepted_version: _Optional[int] = ..., accepted_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., role_expires: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
