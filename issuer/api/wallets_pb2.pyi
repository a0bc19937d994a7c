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

class DeviceKeyAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DEVICE_KEY_ALGORITHM_UNSPECIFIED: _ClassVar[DeviceKeyAlgorithm]
    DEVICE_KEY_ALGORITHM_ES256: _ClassVar[DeviceKeyAlgorithm]
    DEVICE_KEY_ALGORITHM_SM2_SM3: _ClassVar[DeviceKeyAlgorithm]

class Channel(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CHANNEL_UNSPECIFIED: _ClassVar[Channel]
    CHANNEL_PHONE: _ClassVar[Channel]
    CHANNEL_STATIC: _ClassVar[Channel]
DEVICE_KEY_ALGORITHM_UNSPECIFIED: DeviceKeyAlgorithm
DEVICE_KEY_ALGORITHM_ES256: DeviceKeyAlgorithm
DEVICE_KEY_ALGORITHM_SM2_SM3: DeviceKeyAlgorithm
CHANNEL_UNSPECIFIED: Channel
CHANNEL_PHONE: Channel
CHANNEL_STATIC: Channel

class DeviceKey(_message.Message):
    __slots__ = ("algorithm", "public_key")
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_FIELD_NUMBER: _ClassVar[int]
    algorithm: DeviceKeyAlgorithm
    public_key: bytes
    def __init__(self, algorithm: _Optional[_Union[DeviceKeyAlgorithm, str]] = ..., public_key: _Optional[bytes] = ...) -> None: ...

class CreateChallengeRequest(_message.Message):
    __slots__ = ("main_index_id", "document")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class CreateChallengeResponse(_message.Message):
    __slots__ = ("challenge", "expires_at")
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_AT_FIELD_NUMBER: _ClassVar[int]
    challenge: bytes
    expires_at: _timestamp_pb2.Timestamp
    def __init__(self, challenge: _Optional[bytes] = ..., expires_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class IssueCredentialRequest(_message.Message):
    __slots__ = ("main_index_id", "document", "challenge", "device_key", "proof", "idempotency_key")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    CHALLENGE_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KEY_FIELD_NUMBER: _ClassVar[int]
    PROOF_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    challenge: bytes
    device_key: DeviceKey
    proof: bytes
    idempotency_key: str
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., challenge: _Optional[bytes] = ..., device_key: _Optional[_Union[DeviceKey, _Mapping]] = ..., proof: _Optional[bytes] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class IssueCredentialResponse(_message.Message):
    __slots__ = ("credential",)
    CREDENTIAL_FIELD_NUMBER: _ClassVar[int]
    credential: _common_pb2.IssuedCode
    def __init__(self, credential: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ...) -> None: ...

class ListLiveCodesRequest(_message.Message):
    __slots__ = ("main_index_id", "document")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ...) -> None: ...

class LiveCode(_message.Message):
    __slots__ = ("code", "channel")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.IssuedCode
    channel: Channel
    def __init__(self, code: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ..., channel: _Optional[_Union[Channel, str]] = ...) -> None: ...

class ListLiveCodesResponse(_message.Message):
    __slots__ = ("codes",)
    CODES_FIELD_NUMBER: _ClassVar[int]
    codes: _containers.RepeatedCompositeFieldContainer[LiveCode]
    def __init__(self, codes: _Optional[_Iterable[_Union[LiveCode, _Mapping]]] = ...) -> None: ...
