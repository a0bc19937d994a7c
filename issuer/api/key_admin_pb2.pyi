import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class KeyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_STATE_UNSPECIFIED: _ClassVar[KeyState]
    KEY_STATE_PREPUBLISHED: _ClassVar[KeyState]
    KEY_STATE_ACTIVE: _ClassVar[KeyState]
    KEY_STATE_RETIRED: _ClassVar[KeyState]
    KEY_STATE_COMPROMISED: _ClassVar[KeyState]
    KEY_STATE_EXPIRED: _ClassVar[KeyState]

class KeyAlgorithm(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    KEY_ALGORITHM_UNSPECIFIED: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_ES256: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_EDDSA: _ClassVar[KeyAlgorithm]
    KEY_ALGORITHM_SM2_SM3: _ClassVar[KeyAlgorithm]

class CompromisePolicy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    COMPROMISE_POLICY_UNSPECIFIED: _ClassVar[CompromisePolicy]
    COMPROMISE_POLICY_REJECT_FROM_COMPROMISE: _ClassVar[CompromisePolicy]
    COMPROMISE_POLICY_REJECT_ALL: _ClassVar[CompromisePolicy]

class PlanReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_REASON_UNSPECIFIED: _ClassVar[PlanReason]
    PLAN_REASON_SCHEDULED: _ClassVar[PlanReason]
    PLAN_REASON_CODE_CAP: _ClassVar[PlanReason]
    PLAN_REASON_NO_SIGNING_KEY: _ClassVar[PlanReason]
KEY_STATE_UNSPECIFIED: KeyState
KEY_STATE_PREPUBLISHED: KeyState
KEY_STATE_ACTIVE: KeyState
KEY_STATE_RETIRED: KeyState
KEY_STATE_COMPROMISED: KeyState
KEY_STATE_EXPIRED: KeyState
KEY_ALGORITHM_UNSPECIFIED: KeyAlgorithm
KEY_ALGORITHM_ES256: KeyAlgorithm
KEY_ALGORITHM_EDDSA: KeyAlgorithm
KEY_ALGORITHM_SM2_SM3: KeyAlgorithm
COMPROMISE_POLICY_UNSPECIFIED: CompromisePolicy
COMPROMISE_POLICY_REJECT_FROM_COMPROMISE: CompromisePolicy
COMPROMISE_POLICY_REJECT_ALL: CompromisePolicy
PLAN_REASON_UNSPECIFIED: PlanReason
PLAN_REASON_SCHEDULED: PlanReason
PLAN_REASON_CODE_CAP: PlanReason
PLAN_REASON_NO_SIGNING_KEY: PlanReason

class ManagedKey(_message.Message):
    __slots__ = ("kid", "algorithm", "state", "signing", "use_from", "use_until", "verify_until", "compromised_since", "compromise_policy", "keystore", "label", "codes_signed", "public_key_spki")
    KID_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SIGNING_FIELD_NUMBER: _ClassVar[int]
    USE_FROM_FIELD_NUMBER: _ClassVar[int]
    USE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    VERIFY_UNTIL_FIELD_NUMBER: _ClassVar[int]
    COMPROMISED_SINCE_FIELD_NUMBER: _ClassVar[int]
    COMPROMISE_POLICY_FIELD_NUMBER: _ClassVar[int]
    KEYSTORE_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    CODES_SIGNED_FIELD_NUMBER: _ClassVar[int]
    PUBLIC_KEY_SPKI_FIELD_NUMBER: _ClassVar[int]
    kid: bytes
    algorithm: KeyAlgorithm
    state: KeyState
    signing: bool
    use_from: _timestamp_pb2.Timestamp
    use_until: _timestamp_pb2.Timestamp
    verify_until: _timestamp_pb2.Timestamp
    compromised_since: _timestamp_pb2.Timestamp
    compromise_policy: CompromisePolicy
    keystore: str
    label: str
    codes_signed: int
    public_key_spki: bytes
    def __init__(self, kid: _Optional[bytes] = ..., algorithm: _Optional[_Union[KeyAlgorithm, str]] = ..., state: _Optional[_Union[KeyState, str]] = ..., signing: _Optional[bool] = ..., use_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., use_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., verify_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., compromised_since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., compromise_policy: _Optional[_Union[CompromisePolicy, str]] = ..., keystore: _Optional[str] = ..., label: _Optional[str] = ..., codes_signed: _Optional[int] = ..., public_key_spki: _Optional[bytes] = ...) -> None: ...

class RotationPolicy(_message.Message):
    __slots__ = ("usage_period_seconds", "lead_time_seconds", "max_code_validity_seconds", "max_codes_per_key", "allow_emergency")
    USAGE_PERIOD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    LEAD_TIME_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CODE_VALIDITY_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MAX_CODES_PER_KEY_FIELD_NUMBER: _ClassVar[int]
    ALLOW_EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    usage_period_seconds: int
    lead_time_seconds: int
    max_code_validity_seconds: int
    max_codes_per_key: int
    allow_emergency: bool
    def __init__(self, usage_period_seconds: _Optional[int] = ..., lead_time_seconds: _Optional[int] = ..., max_code_validity_seconds: _Optional[int] = ..., max_codes_per_key: _Optional[int] = ..., allow_emergency: _Optional[bool] = ...) -> None: ...

class Publication(_message.Message):
    __slots__ = ("serial", "role_version", "visible", "written")
    SERIAL_FIELD_NUMBER: _ClassVar[int]
    ROLE_VERSION_FIELD_NUMBER: _ClassVar[int]
    VISIBLE_FIELD_NUMBER: _ClassVar[int]
    WRITTEN_FIELD_NUMBER: _ClassVar[int]
    serial: int
    role_version: int
    visible: bool
    written: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, serial: _Optional[int] = ..., role_version: _Optional[int] = ..., visible: _Optional[bool] = ..., written: _Optional[_Iterable[str]] = ...) -> None: ...

class ListKeysRequest(_message.Message):
    __slots__ = ("province",)
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    province: str
    def __init__(self, province: _Optional[str] = ...) -> None: ...

class ListKeysResponse(_message.Message):
    __slots__ = ("province", "revision", "keys", "policy")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    KEYS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    province: str
    revision: int
    keys: _containers.RepeatedCompositeFieldContainer[ManagedKey]
    policy: RotationPolicy
    def __init__(self, province: _Optional[str] = ..., revision: _Optional[int] = ..., keys: _Optional[_Iterable[_Union[ManagedKey, _Mapping]]] = ..., policy: _Optional[_Union[RotationPolicy, _Mapping]] = ...) -> None: ...

class PlanRotationRequest(_message.Message):
    __slots__ = ("province",)
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    province: str
    def __init__(self, province: _Optional[str] = ...) -> None: ...

class PlanRotationResponse(_message.Message):
    __slots__ = ("reason", "use_from", "use_until", "replaces_kid")
    REASON_FIELD_NUMBER: _ClassVar[int]
    USE_FROM_FIELD_NUMBER: _ClassVar[int]
    USE_UNTIL_FIELD_NUMBER: _ClassVar[int]
    REPLACES_KID_FIELD_NUMBER: _ClassVar[int]
    reason: PlanReason
    use_from: _timestamp_pb2.Timestamp
    use_until: _timestamp_pb2.Timestamp
    replaces_kid: bytes
    def __init__(self, reason: _Optional[_Union[PlanReason, str]] = ..., use_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., use_until: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., replaces_kid: _Optional[bytes] = ...) -> None: ...

class RotateKeyRequest(_message.Message):
    __slots__ = ("province", "algorithm", "use_from", "label", "emergency")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    ALGORITHM_FIELD_NUMBER: _ClassVar[int]
    USE_FROM_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_NUMBER: _ClassVar[int]
    EMERGENCY_FIELD_NUMBER: _ClassVar[int]
    province: str
    algorithm: KeyAlgorithm
    use_from: _timestamp_pb2.Timestamp
    label: str
    emergency: bool
    def __init__(self, province: _Optional[str] = ..., algorithm: _Optional[_Union[KeyAlgorithm, str]] = ..., use_from: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., label: _Optional[str] = ..., emergency: _Optional[bool] = ...) -> None: ...

class RotateKeyResponse(_message.Message):
    __slots__ = ("key", "revision", "warnings")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    key: ManagedKey
    revision: int
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[_Union[ManagedKey, _Mapping]] = ..., revision: _Optional[int] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class MarkCompromisedRequest(_message.Message):
    __slots__ = ("province", "kid", "since", "policy", "publish")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    SINCE_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_FIELD_NUMBER: _ClassVar[int]
    province: str
    kid: bytes
    since: _timestamp_pb2.Timestamp
    policy: CompromisePolicy
    publish: bool
    def __init__(self, province: _Optional[str] = ..., kid: _Optional[bytes] = ..., since: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., policy: _Optional[_Union[CompromisePolicy, str]] = ..., publish: _Optional[bool] = ...) -> None: ...

class MarkCompromisedResponse(_message.Message):
    __slots__ = ("key", "revision", "publication", "warnings")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    key: ManagedKey
    revision: int
    publication: Publication
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[_Union[ManagedKey, _Mapping]] = ..., revision: _Optional[int] = ..., publication: _Optional[_Union[Publication, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...

class RetireKeyRequest(_message.Message):
    __slots__ = ("province", "kid", "force")
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    KID_FIELD_NUMBER: _ClassVar[int]
    FORCE_FIELD_NUMBER: _ClassVar[int]
    province: str
    kid: bytes
    force: bool
    def __init__(self, province: _Optional[str] = ..., kid: _Optional[bytes] = ..., force: _Optional[bool] = ...) -> None: ...

class RetireKeyResponse(_message.Message):
    __slots__ = ("key", "revision")
    KEY_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    key: ManagedKey
    revision: int
    def __init__(self, key: _Optional[_Union[ManagedKey, _Mapping]] = ..., revision: _Optional[int] = ...) -> None: ...

class PublishKeyListRequest(_message.Message):
    __slots__ = ("province",)
    PROVINCE_FIELD_NUMBER: _ClassVar[int]
    province: str
    def __init__(self, province: _Optional[str] = ...) -> None: ...

class PublishKeyListResponse(_message.Message):
    __slots__ = ("publication", "warnings")
    PUBLICATION_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    publication: Publication
    warnings: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, publication: _Optional[_Union[Publication, _Mapping]] = ..., warnings: _Optional[_Iterable[str]] = ...) -> None: ...
