import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from issuer.api import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RegisterResidentRequest(_message.Message):
    __slots__ = ("primary", "supplementary")
    PRIMARY_FIELD_NUMBER: _ClassVar[int]
    SUPPLEMENTARY_FIELD_NUMBER: _ClassVar[int]
    primary: _common_pb2.Document
    supplementary: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    def __init__(self, primary: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., supplementary: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ...) -> None: ...

class RegisterResidentResponse(_message.Message):
    __slots__ = ("main_index_id", "provisional")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PROVISIONAL_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    provisional: bool
    def __init__(self, main_index_id: _Optional[str] = ..., provisional: _Optional[bool] = ...) -> None: ...

class LinkIdentifierRequest(_message.Message):
    __slots__ = ("main_index_id", "document")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class LinkIdentifierResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FindResidentRequest(_message.Message):
    __slots__ = ("document",)
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    document: _common_pb2.Document
    def __init__(self, document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class FindResidentResponse(_message.Message):
    __slots__ = ("main_index_id", "home_province")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    HOME_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    home_province: str
    def __init__(self, main_index_id: _Optional[str] = ..., home_province: _Optional[str] = ...) -> None: ...

class MergeResidentsRequest(_message.Message):
    __slots__ = ("survivor_main_index_id", "merged_main_index_id")
    SURVIVOR_MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    MERGED_MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    survivor_main_index_id: str
    merged_main_index_id: str
    def __init__(self, survivor_main_index_id: _Optional[str] = ..., merged_main_index_id: _Optional[str] = ...) -> None: ...

class MergeResidentsResponse(_message.Message):
    __slots__ = ("revoked_count",)
    REVOKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    revoked_count: int
    def __init__(self, revoked_count: _Optional[int] = ...) -> None: ...

class ListAccessesRequest(_message.Message):
    __slots__ = ("main_index_id", "page_size", "page_token")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    page_size: int
    page_token: str
    def __init__(self, main_index_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class Access(_message.Message):
    __slots__ = ("access_id", "hospital_organisation", "hospital_province", "purpose", "resolved_at", "code_kind")
    ACCESS_ID_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_ORGANISATION_FIELD_NUMBER: _ClassVar[int]
    HOSPITAL_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    PURPOSE_FIELD_NUMBER: _ClassVar[int]
    RESOLVED_AT_FIELD_NUMBER: _ClassVar[int]
    CODE_KIND_FIELD_NUMBER: _ClassVar[int]
    access_id: str
    hospital_organisation: str
    hospital_province: str
    purpose: int
    resolved_at: _timestamp_pb2.Timestamp
    code_kind: str
    def __init__(self, access_id: _Optional[str] = ..., hospital_organisation: _Optional[str] = ..., hospital_province: _Optional[str] = ..., purpose: _Optional[int] = ..., resolved_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., code_kind: _Optional[str] = ...) -> None: ...

class ListAccessesResponse(_message.Message):
    __slots__ = ("accesses", "next_page_token")
    ACCESSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    accesses: _containers.RepeatedCompositeFieldContainer[Access]
    next_page_token: str
    def __init__(self, accesses: _Optional[_Iterable[_Union[Access, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class MoveResidentInRequest(_message.Message):
    __slots__ = ("main_index_id", "document", "supplementary", "consent")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    SUPPLEMENTARY_FIELD_NUMBER: _ClassVar[int]
    CONSENT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    supplementary: _containers.RepeatedCompositeFieldContainer[_common_pb2.Document]
    consent: _common_pb2.Consent
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., supplementary: _Optional[_Iterable[_Union[_common_pb2.Document, _Mapping]]] = ..., consent: _Optional[_Union[_common_pb2.Consent, _Mapping]] = ...) -> None: ...

class MoveResidentInResponse(_message.Message):
    __slots__ = ("main_index_id", "previous_province")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    PREVIOUS_PROVINCE_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    previous_province: str
    def __init__(self, main_index_id: _Optional[str] = ..., previous_province: _Optional[str] = ...) -> None: ...
