import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DocumentType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DOCUMENT_TYPE_UNSPECIFIED: _ClassVar[DocumentType]
    DOCUMENT_TYPE_RESIDENT_ID: _ClassVar[DocumentType]
    DOCUMENT_TYPE_RESIDENCE_PERMIT_HMT: _ClassVar[DocumentType]
    DOCUMENT_TYPE_PERMANENT_RESIDENCE_ID: _ClassVar[DocumentType]
    DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO: _ClassVar[DocumentType]
    DOCUMENT_TYPE_TRAVEL_PERMIT_TW: _ClassVar[DocumentType]
    DOCUMENT_TYPE_PASSPORT: _ClassVar[DocumentType]

class ConsentMethod(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CONSENT_METHOD_UNSPECIFIED: _ClassVar[ConsentMethod]
    CONSENT_METHOD_IN_PERSON: _ClassVar[ConsentMethod]
    CONSENT_METHOD_APP: _ClassVar[ConsentMethod]

class RevocationReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REVOCATION_REASON_UNSPECIFIED: _ClassVar[RevocationReason]
    REVOCATION_REASON_LOST_DEVICE: _ClassVar[RevocationReason]
    REVOCATION_REASON_DECEASED: _ClassVar[RevocationReason]
    REVOCATION_REASON_FRAUD: _ClassVar[RevocationReason]
    REVOCATION_REASON_MERGED: _ClassVar[RevocationReason]
    REVOCATION_REASON_SUPERSEDED: _ClassVar[RevocationReason]
    REVOCATION_REASON_KEY_COMPROMISE: _ClassVar[RevocationReason]
    REVOCATION_REASON_OTHER: _ClassVar[RevocationReason]

class CodeState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CODE_STATE_UNSPECIFIED: _ClassVar[CodeState]
    CODE_STATE_VALID: _ClassVar[CodeState]
    CODE_STATE_EXPIRED: _ClassVar[CodeState]
    CODE_STATE_REVOKED: _ClassVar[CodeState]
DOCUMENT_TYPE_UNSPECIFIED: DocumentType
DOCUMENT_TYPE_RESIDENT_ID: DocumentType
DOCUMENT_TYPE_RESIDENCE_PERMIT_HMT: DocumentType
DOCUMENT_TYPE_PERMANENT_RESIDENCE_ID: DocumentType
DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO: DocumentType
DOCUMENT_TYPE_TRAVEL_PERMIT_TW: DocumentType
DOCUMENT_TYPE_PASSPORT: DocumentType
CONSENT_METHOD_UNSPECIFIED: ConsentMethod
CONSENT_METHOD_IN_PERSON: ConsentMethod
CONSENT_METHOD_APP: ConsentMethod
REVOCATION_REASON_UNSPECIFIED: RevocationReason
REVOCATION_REASON_LOST_DEVICE: RevocationReason
REVOCATION_REASON_DECEASED: RevocationReason
REVOCATION_REASON_FRAUD: RevocationReason
REVOCATION_REASON_MERGED: RevocationReason
REVOCATION_REASON_SUPERSEDED: RevocationReason
REVOCATION_REASON_KEY_COMPROMISE: RevocationReason
REVOCATION_REASON_OTHER: RevocationReason
CODE_STATE_UNSPECIFIED: CodeState
CODE_STATE_VALID: CodeState
CODE_STATE_EXPIRED: CodeState
CODE_STATE_REVOKED: CodeState

class Document(_message.Message):
    __slots__ = ("type", "number", "country")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    COUNTRY_FIELD_NUMBER: _ClassVar[int]
    type: DocumentType
    number: str
    country: str
    def __init__(self, type: _Optional[_Union[DocumentType, str]] = ..., number: _Optional[str] = ..., country: _Optional[str] = ...) -> None: ...

class Consent(_message.Message):
    __slots__ = ("method", "given_at", "reference")
    METHOD_FIELD_NUMBER: _ClassVar[int]
    GIVEN_AT_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    method: ConsentMethod
    given_at: _timestamp_pb2.Timestamp
    reference: str
    def __init__(self, method: _Optional[_Union[ConsentMethod, str]] = ..., given_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., reference: _Optional[str] = ...) -> None: ...

class CodeRef(_message.Message):
    __slots__ = ("province", "kid", "serial")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    province: str
    kid: bytes
    serial: int
    def __init__(self, province: _Optional[str] = ..., kid: _Optional[bytes] = ..., serial: _Optional[int] = ...) -> None: ...

class IssuedCode(_message.Message):
    __slots__ = ("ref", "main_index_id", "code_text", "issued_at", "expires_at", "state", "revoked_at", "revocation_reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    CODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    ISSUED_AT_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    REVOKED_AT_FIELD_NUMBER: _ClassVar[int]
    REVOCATION_REASON_FIELD_NUMBER: _ClassVar[int]
    ref: CodeRef
    main_index_id: str
    code_text: str
    issued_at: _timestamp_pb2.Timestamp
    expires_at: _timestamp_pb2.Timestamp
    state: CodeState
    revoked_at: _timestamp_pb2.Timestamp
    revocation_reason: RevocationReason
    def __init__(self, ref: _Optional[_Union[CodeRef, _Mapping]] = ..., main_index_id: _Optional[str] = ..., code_text: _Optional[str] = ..., issued_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., state: _Optional[_Union[CodeState, str]] = ..., revoked_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., revocation_reason: _Optional[_Union[RevocationReason, str]] = ...) -> None: ...
