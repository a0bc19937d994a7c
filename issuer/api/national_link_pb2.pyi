import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from issuer.api import common_pb2 as _common_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReleaseResidentRequest(_message.Message):
    __slots__ = ("main_index_id", "to_province", "consent_reference")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    TO_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    CONSENT_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    to_province: str
    consent_reference: str
    def __init__(self, main_index_id: _Optional[str] = ..., to_province: _Optional[str] = ..., consent_reference: _Optional[str] = ...) -> None: ...

class ReleaseResidentResponse(_message.Message):
    __slots__ = ("superseded_codes",)
    SUPERSEDED_CODES_FIELD_NUMBER: _ClassVar[int]
    superseded_codes: int
    def __init__(self, superseded_codes: _Optional[int] = ...) -> None: ...

class Hospital(_message.Message):
    __slots__ = ("organisation", "province")
    ORGANISATION_FIELD_NUMBER: _ClassVar[int]
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    organisation: str
    province: str
    def __init__(self, organisation: _Optional[str] = ..., province: _Optional[str] = ...) -> None: ...

class ResolvePatientRequest(_message.Message):
    __slots__ = ("code", "purpose", "hospital")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_FIELD_NUMBER: _ClassVar[int]
    code: str
    purpose: int
    hospital: Hospital
    def __init__(self, code: _Optional[str] = ..., purpose: _Optional[int] = ..., hospital: _Optional[_Union[Hospital, _Mapping]] = ...) -> None: ...

class ResolvePatientResponse(_message.Message):
    __slots__ = ("main_index_id", "primary_document", "access_id", "resolved_at")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    ACCESS_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    primary_document: _common_pb2.Document
    access_id: str
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, main_index_id: _Optional[str] = ..., primary_document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., access_id: _Optional[str] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
