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
    __slots__ = ("main_index_id",)
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    def __init__(self, main_index_id: _Optional[str] = ...) -> None: ...

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
    __slots__ = ("main_index_id",)
    MAIN_INDEX_ID_FIELD_NUMBER: _ClassVar[int]
    main_index_id: str
    def __init__(self, main_index_id: _Optional[str] = ...) -> None: ...

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
