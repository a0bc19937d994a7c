from issuer.api import common_pb2 as _common_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    IMAGE_FORMAT_PNG: _ClassVar[ImageFormat]
    IMAGE_FORMAT_SVG: _ClassVar[ImageFormat]
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
IMAGE_FORMAT_PNG: ImageFormat
IMAGE_FORMAT_SVG: ImageFormat

class IssueCodeRequest(_message.Message):
    __slots__ = ("main_index_id", "document", "idempotency_key")
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    document: _common_pb2.Document
    idempotency_key: str
    def __init__(self, main_index_id: _Optional[str] = ..., document: _Optional[_Union[_common_pb2.Document, _Mapping]] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class IssueCodeResponse(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.IssuedCode
    def __init__(self, code: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ...) -> None: ...

class RenewCodeRequest(_message.Message):
    __slots__ = ("ref", "code_text", "idempotency_key")
    REF_FIELD_NUMBER: _ClassVar[int]
    CODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    IDEMPOTENCY_KEY_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.CodeRef
    code_text: str
    idempotency_key: str
    def __init__(self, ref: _Optional[_Union[_common_pb2.CodeRef, _Mapping]] = ..., code_text: _Optional[str] = ..., idempotency_key: _Optional[str] = ...) -> None: ...

class RenewCodeResponse(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.IssuedCode
    def __init__(self, code: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ...) -> None: ...

class RevokeCodeRequest(_message.Message):
    __slots__ = ("ref", "code_text", "main_index_id", "reason")
    REF_FIELD_NUMBER: _ClassVar[int]
    CODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.CodeRef
    code_text: str
    main_index_id: str
    reason: _common_pb2.RevocationReason
    def __init__(self, ref: _Optional[_Union[_common_pb2.CodeRef, _Mapping]] = ..., code_text: _Optional[str] = ..., main_index_id: _Optional[str] = ..., reason: _Optional[_Union[_common_pb2.RevocationReason, str]] = ...) -> None: ...

class RevokeCodeResponse(_message.Message):
    __slots__ = ("revoked_count", "code")
    REVOKED_COUNT_FIELD_NUMBER: _ClassVar[int]
    CODE_FIELD_NUMBER: _ClassVar[int]
    revoked_count: int
    code: _common_pb2.IssuedCode
    def __init__(self, revoked_count: _Optional[int] = ..., code: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ...) -> None: ...

class GetCodeStatusRequest(_message.Message):
    __slots__ = ("ref", "code_text")
    REF_FIELD_NUMBER: _ClassVar[int]
    CODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.CodeRef
    code_text: str
    def __init__(self, ref: _Optional[_Union[_common_pb2.CodeRef, _Mapping]] = ..., code_text: _Optional[str] = ...) -> None: ...

class GetCodeStatusResponse(_message.Message):
    __slots__ = ("code",)
    CODE_FIELD_NUMBER: _ClassVar[int]
    code: _common_pb2.IssuedCode
    def __init__(self, code: _Optional[_Union[_common_pb2.IssuedCode, _Mapping]] = ...) -> None: ...

class RenderCodeRequest(_message.Message):
    __slots__ = ("ref", "code_text", "format", "scale", "border")
    REF_FIELD_NUMBER: _ClassVar[int]
    CODE_TEXT_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    BORDER_FIELD_NUMBER: _ClassVar[int]
    ref: _common_pb2.CodeRef
    code_text: str
    format: ImageFormat
    scale: int
    border: int
    def __init__(self, ref: _Optional[_Union[_common_pb2.CodeRef, _Mapping]] = ..., code_text: _Optional[str] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., scale: _Optional[int] = ..., border: _Optional[int] = ...) -> None: ...

class RenderCodeResponse(_message.Message):
    __slots__ = ("image", "content_type")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_TYPE_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    content_type: str
    def __init__(self, image: _Optional[bytes] = ..., content_type: _Optional[str] = ...) -> None: ...
