import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from issuer.api import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class IdentityState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IDENTITY_STATE_UNSPECIFIED: _ClassVar[IdentityState]
    IDENTITY_STATE_ACTIVE: _ClassVar[IdentityState]
    IDENTITY_STATE_MOVED: _ClassVar[IdentityState]
    IDENTITY_STATE_MERGED: _ClassVar[IdentityState]

class ClaimOutcome(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CLAIM_OUTCOME_UNSPECIFIED: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_CLAIMED: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_HELD: _ClassVar[ClaimOutcome]
    CLAIM_OUTCOME_MERGED: _ClassVar[ClaimOutcome]

class EventKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EVENT_KIND_UNSPECIFIED: _ClassVar[EventKind]
    EVENT_KIND_MERGED_AWAY: _ClassVar[EventKind]
    EVENT_KIND_ABSORBED: _ClassVar[EventKind]
    EVENT_KIND_MOVED_AWAY: _ClassVar[EventKind]

class Purpose(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PURPOSE_UNSPECIFIED: _ClassVar[Purpose]
    PURPOSE_REGISTRATION: _ClassVar[Purpose]
    PURPOSE_TREATMENT: _ClassVar[Purpose]
    PURPOSE_EMERGENCY: _ClassVar[Purpose]
    PURPOSE_BILLING: _ClassVar[Purpose]
IDENTITY_STATE_UNSPECIFIED: IdentityState
IDENTITY_STATE_ACTIVE: IdentityState
IDENTITY_STATE_MOVED: IdentityState
IDENTITY_STATE_MERGED: IdentityState
CLAIM_OUTCOME_UNSPECIFIED: ClaimOutcome
CLAIM_OUTCOME_CLAIMED: ClaimOutcome
CLAIM_OUTCOME_HELD: ClaimOutcome
CLAIM_OUTCOME_MERGED: ClaimOutcome
EVENT_KIND_UNSPECIFIED: EventKind
EVENT_KIND_MERGED_AWAY: EventKind
EVENT_KIND_ABSORBED: EventKind
EVENT_KIND_MOVED_AWAY: EventKind
PURPOSE_UNSPECIFIED: Purpose
PURPOSE_REGISTRATION: Purpose
PURPOSE_TREATMENT: Purpose
PURPOSE_EMERGENCY: Purpose
PURPOSE_BILLING: Purpose

class ClaimIdentityRequest(_message.Message):
    __slots__ = ("main_index_id", "documents", "provisional", "registered_at", "home_province")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    REGISTERED_AT_FIELD_NUMBER: _ClassVar[int]
    HOME_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    documents: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    provisional: bool
    registered_at: _timestamp_pb2.Timestamp
    home_province: str
    def __init__(self, main_index_id: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ..., provisional: _Optional[bool] = ..., registered_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., home_province: _Optional[str] = ...) -> None: ...

class ClaimIdentityResponse(_message.Message):
    __slots__ = ("outcome", "main_index_id", "home_province")
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    HOME_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    outcome: ClaimOutcome
    main_index_id: str
    home_province: str
    def __init__(self, outcome: _Optional[_Union[ClaimOutcome, str]] = ..., main_index_id: _Optional[str] = ..., home_province: _Optional[str] = ...) -> None: ...

class TransferResidentRequest(_message.Message):
    __slots__ = ("main_index_id", "document", "consent")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    consent: _common_pb2.Consent
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., consent: _Optional[_Union[_common_pb2.Consent, _Mapping]] = ...) -> None: ...

class TransferResidentResponse(_message.Message):
    __slots__ = ("main_index_id", "previous_province")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    previous_province: str
    def __init__(self, main_index_id: _Optional[str] = ..., previous_province: _Optional[str] = ...) -> None: ...

class Event(_message.Message):
    __slots__ = ("sequence", "kind", "main_index_id", "other_main_index_id", "other_province", "recorded_at")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    OTHER_MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    OTHER_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    RECORDED_AT_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    kind: EventKind
    main_index_id: str
    other_main_index_id: str
    other_province: str
    recorded_at: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., kind: _Optional[_Union[EventKind, str]] = ..., main_index_id: _Optional[str] = ..., other_main_index_id: _Optional[str] = ..., other_province: _Optional[str] = ..., recorded_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ListEventsRequest(_message.Message):
    __slots__ = ("after_sequence", "page_size")
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    page_size: int
    def __init__(self, after_sequence: _Optional[int] = ..., page_size: _Optional[int] = ...) -> None: ...

class ListEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[Event]
    def __init__(self, events: _Optional[_Iterable[_Union[Event, _Mapping]]] = ...) -> None: ...

class ResolveCodeRequest(_message.Message):
    __slots__ = ("code", "purpose")
    CODE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    code: str
    purpose: Purpose
    def __init__(self, code: _Optional[str] = ..., purpose: _Optional[_Union[Purpose, str]] = ...) -> None: ...

class ResolveCodeResponse(_message.Message):
    __slots__ = ("main_index_id", "primary_document", "home_province", "access_id", "resolved_at")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PRIMARY_DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    HOME_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    ACCESS_ID_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    primary_document: _common_pb2.Document
    home_province: str
    access_id: str
    resolved_at: _timestamp_pb2.Timestamp
    def __init__(self, main_index_id: _Optional[str] = ..., primary_document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., home_province: _Optional[str] = ..., access_id: _Optional[str] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
