"""Value types of the code format: provinces, main index IDs, claims, verified codes.

Constructors enforce the format's invariants, so a value of these types is
always well formed. Times are timezone-aware UTC ``datetime`` values at the API
and whole seconds since the Unix epoch on the wire.
"""

from __future__ import annotations

import base64
import datetime as _dt
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, NamedTuple, NewType

from .errors import InvalidClaims

__all__ = [
    "PROVINCES",
    "PROVINCES_EN",
    "province_label",
    "ProvinceCode",
    "MainIndexId",
    "parse_province",
    "parse_main_index_id",
    "main_index_id_from_bytes",
    "CodeClaims",
    "VerifiedCode",
    "to_epoch",
    "from_epoch",
    "MAX_SERIAL",
]

#: GB/T 2260 provincial-level division codes (first two digits), with names.
PROVINCES: Mapping[str, str] = MappingProxyType(
    {
        "11": "北京", "12": "天津", "13": "河北", "14": "山西", "15": "内蒙古",
        "21": "辽宁", "22": "吉林", "23": "黑龙江", "31": "上海", "32": "江苏",
        "33": "浙江", "34": "安徽", "35": "福建", "36": "江西", "37": "山东",
        "41": "河南", "42": "湖北", "43": "湖南", "44": "广东", "45": "广西",
        "46": "海南", "50": "重庆", "51": "四川", "52": "贵州", "53": "云南",
        "54": "西藏", "61": "陕西", "62": "甘肃", "63": "青海", "64": "宁夏",
        "65": "新疆", "71": "台湾", "81": "香港", "82": "澳门",
    }
)

#: The same divisions' English names, for what people read in both languages.
PROVINCES_EN: Mapping[str, str] = MappingProxyType(
    {
        "11": "Beijing", "12": "Tianjin", "13": "Hebei", "14": "Shanxi", "15": "Inner Mongolia",
        "21": "Liaoning", "22": "Jilin", "23": "Heilongjiang", "31": "Shanghai", "32": "Jiangsu",
        "33": "Zhejiang", "34": "Anhui", "35": "Fujian", "36": "Jiangxi", "37": "Shandong",
        "41": "Henan", "42": "Hubei", "43": "Hunan", "44": "Guangdong", "45": "Guangxi",
        "46": "Hainan", "50": "Chongqing", "51": "Sichuan", "52": "Guizhou", "53": "Yunnan",
        "54": "Tibet", "61": "Shaanxi", "62": "Gansu", "63": "Qinghai", "64": "Ningxia",
        "65": "Xinjiang", "71": "Taiwan", "81": "Hong Kong", "82": "Macao",
    }
)


def province_label(code: str) -> str:
    """``浙江 Zhejiang (33)``: how a person reads a province, in Chinese and English."""
    return f"{PROVINCES[code]} {PROVINCES_EN[code]} ({code})"


ProvinceCode = NewType("ProvinceCode", str)
"""Two-digit GB/T 2260 province code, e.g. ``"33"`` (Zhejiang)."""

MainIndexId = NewType("MainIndexId", str)
"""A resident's main index ID: 128 random bits as 26 upper-case Base32 characters.

It is random, never derived from an ID number or a name; only the issuer's
main index can map it back to a person.
"""

MAIN_INDEX_ID_BYTES = 16
MAIN_INDEX_ID_LENGTH = 26
_BASE32_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")

#: Serials are unsigned and fit in 8 bytes on the wire.
MAX_SERIAL = 2**64 - 1

_EPOCH = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)


def parse_province(value: str) -> ProvinceCode:
    """Return ``value`` as a :data:`ProvinceCode` or raise :class:`InvalidClaims`."""
    if not isinstance(value, str) or value not in PROVINCES:
        raise InvalidClaims(f"not a GB/T 2260 province code: {value!r}")
    return ProvinceCode(value)


def parse_main_index_id(value: str) -> MainIndexId:
    """Return ``value`` as a :data:`MainIndexId` or raise :class:`InvalidClaims`."""
    if (
        not isinstance(value, str)
        or len(value) != MAIN_INDEX_ID_LENGTH
        or not _BASE32_CHARS.issuperset(value)
        or value[-1] not in "AEIMQUY4"  # 128 bits leave the last character's low 2 bits zero
    ):
        raise InvalidClaims("main index ID must be 26 Base32 characters (128 bits)")
    return MainIndexId(value)


def main_index_id_from_bytes(random_bytes: bytes) -> MainIndexId:
    """Build a main index ID from 16 random bytes supplied by the caller."""
    if len(random_bytes) != MAIN_INDEX_ID_BYTES:
        raise InvalidClaims("main index ID needs exactly 16 random bytes")
    return MainIndexId(base64.b32encode(random_bytes).decode("ascii").rstrip("="))


def to_epoch(moment: _dt.datetime) -> int:
    """Whole seconds since the epoch for an aware ``datetime`` (floors fractions)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime: pass a timezone-aware UTC time")
    delta = moment - _EPOCH
    return delta.days * 86400 + delta.seconds


def from_epoch(seconds: int) -> _dt.datetime:
    return _EPOCH + _dt.timedelta(seconds=seconds)


@dataclass(frozen=True, slots=True)
class CodeClaims:
    """What an issuer asks to sign. Validated on construction.

    ``serial`` is the code's serial number, dense and never reused within
    (province, signing key): revocation lists are sets of these serials.
    ``holder_key`` is the reserved RFC 8747 ``cnf`` claim (``{1: COSE_Key}``) for
    dynamic codes; ``status`` is the reserved optional status claim; ``extra``
    holds further claims, keyed by integer or text, carried as they are.
    """

    province: ProvinceCode
    subject: MainIndexId
    serial: int
    issued_at: _dt.datetime
    expires_at: _dt.datetime
    holder_key: Mapping[Any, Any] | None = None
    status: int | None = None
    extra: Mapping[int | str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        parse_province(self.province)
        parse_main_index_id(self.subject)
        if type(self.serial) is not int or not 0 <= self.serial <= MAX_SERIAL:
            raise InvalidClaims("serial must be an integer in [0, 2**64)")
        try:
            iat, exp = to_epoch(self.issued_at), to_epoch(self.expires_at)
        except (ValueError, AttributeError, TypeError):
            raise InvalidClaims("issued_at and expires_at must be aware datetimes") from None
        if not 0 <= iat < exp <= 0xFFFFFFFF:
            raise InvalidClaims("expires_at must be after issued_at (both between 1970 and 2106)")
        if self.holder_key is not None and not isinstance(self.holder_key, Mapping):
            raise InvalidClaims("holder_key must be an RFC 8747 confirmation map {1: COSE_Key}")
        if self.status is not None and (type(self.status) is not int or self.status < 0):
            raise InvalidClaims("status must be a non-negative integer")
        from .codec import RESERVED_CLAIM_KEYS  # late import: codec imports model

        clash = RESERVED_CLAIM_KEYS.intersection(self.extra)
        if clash:
            raise InvalidClaims(f"extra claims use reserved keys: {sorted(clash, key=str)}")


class VerifiedCode(NamedTuple):
    """A code whose signature, key and time windows have all been checked.

    Only :func:`healthcode.verify` creates these. ``iat``/``exp`` are epoch
    seconds; ``issued_at``/``expires_at`` give the same as ``datetime``.
    (An immutable named tuple rather than a frozen dataclass: it is built on
    every verification, and a tuple is built several times faster.)
    """

    province: ProvinceCode
    subject: MainIndexId
    serial: int
    iat: int
    exp: int
    kid: bytes
    algorithm: str
    holder_key: Mapping[Any, Any] | None
    status: int | None
    extra: Mapping[int | str, Any]

    @property
    def issued_at(self) -> _dt.datetime:
        return from_epoch(self.iat)

    @property
    def expires_at(self) -> _dt.datetime:
        return from_epoch(self.exp)
