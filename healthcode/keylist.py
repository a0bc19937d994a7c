"""A province's key list: the signed document that tells verifiers its signing keys.

The key list is the TUF target ``provinces/<code>/keys.json`` that a province
publishes under its own delegation in the national trust repository
(``keys/trustrepo.py``); verifiers fetch it with ``verifier/trustsync.py``.
This module is pure: bytes in, values out.

Wire form (format version 1), canonical JSON: keys sorted, no spaces, ASCII,
no trailing newline::

    {"keys": [{"alg": "ES256", "compromise_policy": "reject_from_compromise",
               "compromised_since": null, "kid": "0a1b...", "public_key_pem": "-----BEGIN...",
               "status": "active", "use_from": "2026-11-01T00:00:00Z",
               "use_until": "2027-01-30T00:00:00Z", "verify_until": "2027-03-01T00:00:00Z"}],
     "province": "33", "serial": 7, "type": "healthcode-key-list", "version": 1}

* ``serial`` increases with every list a province publishes; verifiers refuse
  a list whose serial is lower than one they have already seen.
* ``kid`` is lower-case hex, unique within the list (revocation shards are
  named by (province, kid)).
* ``alg`` must be the algorithm of the key in ``public_key_pem``: the algorithm
  of a signature comes from the trusted key, so the list may not disagree.
* Times are UTC, whole seconds, ``YYYY-MM-DDTHH:MM:SSZ``.

:func:`parse_key_list` is strict: a size cap before anything is parsed, exact
field sets and types, no duplicate JSON keys, the canonical byte form, and
the province named by the delegation the file came from. A list that breaks
any rule raises :class:`InvalidKeyList`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from dataclasses import dataclass
from typing import Any

from .algorithms import Algorithm, load_public_key_pem
from .errors import HealthCodeError, InvalidClaims, InvalidKey, UnsupportedAlgorithm
from .keyring import CompromisePolicy, KeyStatus, TrustedKey
from .model import ProvinceCode, from_epoch, parse_province, to_epoch

__all__ = [
    "KEY_LIST_TYPE",
    "KEY_LIST_FORMAT",
    "MAX_KEY_LIST_BYTES",
    "MAX_KEYS",
    "MAX_SERIAL",
    "InvalidKeyList",
    "KeyList",
    "parse_key_list",
]

KEY_LIST_TYPE = "healthcode-key-list"
KEY_LIST_FORMAT = 1
#: Refused before parsing. About 400 bytes per P-256 key: room for ~150 keys.
MAX_KEY_LIST_BYTES = 64 * 1024
#: A province has 5 to 8 live keys with 3-6 month rotation; this is a fence, not a budget.
MAX_KEYS = 64
#: Serials stay exact in every JSON implementation (2**53 - 1).
MAX_SERIAL = 2**53 - 1

_TOP_FIELDS = frozenset({"type", "version", "province", "serial", "keys"})
_KEY_FIELDS = frozenset(
    {
        "kid",
        "alg",
        "public_key_pem",
        "use_from",
        "use_until",
        "verify_until",
        "status",
        "compromised_since",
        "compromise_policy",
    }
)
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
_TIME_SHAPE = re.compile(r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})Z", re.ASCII)
_KID_SHAPE = re.compile(r"(?:[0-9a-f]{2}){1,32}")
_UTC = _dt.timezone.utc


class InvalidKeyList(HealthCodeError, ValueError):
    """A key list is malformed, inconsistent, or not for the province it claims."""


@dataclass(frozen=True, slots=True)
class KeyList:
    """One province's key list. Validated on construction; ``keys`` are :class:`TrustedKey`."""

    province: ProvinceCode
    serial: int
    keys: tuple[TrustedKey, ...]

    def __post_init__(self) -> None:
        try:
            parse_province(self.province)
        except InvalidClaims as exc:
            raise InvalidKeyList(str(exc)) from None
        if type(self.serial) is not int or not 0 <= self.serial <= MAX_SERIAL:
            raise InvalidKeyList(f"serial must be an integer in [0, {MAX_SERIAL}]")
        keys = tuple(self.keys)
        object.__setattr__(self, "keys", keys)
        if len(keys) > MAX_KEYS:
            raise InvalidKeyList(f"a key list holds at most {MAX_KEYS} keys")
        seen: set[bytes] = set()
        for key in keys:
            if not isinstance(key, TrustedKey):
                raise InvalidKeyList("a key list holds TrustedKey values")
            if key.province != self.province:
                raise InvalidKeyList(
                    f"key {key.kid.hex()} is of province {key.province}, not {self.province}"
                )
            if key.kid in seen:
                raise InvalidKeyList(f"kid {key.kid.hex()} appears twice")
            seen.add(key.kid)
            for name in ("use_from", "use_until", "verify_until", "compromised_since"):
                moment = getattr(key, name)
                if moment is not None and moment.microsecond:
                    raise InvalidKeyList(f"key {key.kid.hex()}: {name} must be whole seconds")

    def trusted_keys(self) -> tuple[TrustedKey, ...]:
        """The keys, ready for a :class:`~healthcode.keyring.Keyring`."""
        return self.keys

    def to_bytes(self) -> bytes:
        """The canonical JSON form; :func:`parse_key_list` accepts exactly this."""
        document = {
            "type": KEY_LIST_TYPE,
            "version": KEY_LIST_FORMAT,
            "province": self.province,
            "serial": self.serial,
            "keys": [_key_to_dict(key) for key in self.keys],
        }
        return _canonical(document)


def parse_key_list(data: bytes, *, province: str) -> KeyList:
    """Parse and check a key list that came from ``province``'s delegation.

    Steps: (1) size cap; (2) strict UTF-8 JSON without duplicate keys or
    non-finite numbers; (3) exact top-level schema and the expected province;
    (4) each key entry: exact fields, kid, PEM key, ``alg`` equal to the key's
    algorithm, times, status; (5) the list's invariants (:class:`KeyList`);
    (6) the bytes are the canonical form.
    """
    # (1) size cap, before any parsing
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InvalidKeyList("key list must be bytes")
    data = bytes(data)
    if len(data) > MAX_KEY_LIST_BYTES:
        raise InvalidKeyList(f"key list is larger than {MAX_KEY_LIST_BYTES} bytes")
    # (2) JSON
    try:
        text = data.decode("utf-8")
        document = json.loads(
            text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant
        )
    except UnicodeDecodeError:
        raise InvalidKeyList("key list is not UTF-8") from None
    except (ValueError, RecursionError) as exc:
        raise InvalidKeyList(f"key list is not valid JSON: {exc}") from None
    # (3) top level
    if not isinstance(document, dict) or set(document) != _TOP_FIELDS:
        raise InvalidKeyList(f"key list must have exactly the fields {sorted(_TOP_FIELDS)}")
    if document["type"] != KEY_LIST_TYPE:
        raise InvalidKeyList(f"type must be {KEY_LIST_TYPE!r}")
    if type(document["version"]) is not int or document["version"] != KEY_LIST_FORMAT:
        raise InvalidKeyList(f"unsupported key list version {document['version']!r}")
    try:
        expected = parse_province(province)
    except InvalidClaims as exc:
        raise InvalidKeyList(str(exc)) from None
    if document["province"] != expected:
        raise InvalidKeyList(
            f"key list names province {document['province']!r} but came from province {expected}"
        )
    entries = document["keys"]
    if not isinstance(entries, list):
        raise InvalidKeyList("keys must be a list")
    if len(entries) > MAX_KEYS:
        raise InvalidKeyList(f"a key list holds at most {MAX_KEYS} keys")
    # (4) keys
    keys = tuple(_key_from_dict(entry, index, expected) for index, entry in enumerate(entries))
    # (5) invariants
    key_list = KeyList(province=expected, serial=document["serial"], keys=keys)
    # (6) canonical form: one list, one byte string
    if key_list.to_bytes() != data:
        raise InvalidKeyList("key list is not in canonical form (sorted keys, no spaces, ASCII)")
    return key_list


def _key_from_dict(entry: Any, index: int, province: ProvinceCode) -> TrustedKey:
    where = f"keys[{index}]"
    if not isinstance(entry, dict) or set(entry) != _KEY_FIELDS:
        raise InvalidKeyList(f"{where} must have exactly the fields {sorted(_KEY_FIELDS)}")
    kid = entry["kid"]
    if not isinstance(kid, str) or not _KID_SHAPE.fullmatch(kid):
        raise InvalidKeyList(f"{where}: kid must be 1 to 32 bytes of lower-case hex")
    where = f"key {kid}"
    try:
        algorithm = Algorithm(entry["alg"])
    except ValueError:
        raise InvalidKeyList(f"{where}: unknown alg {entry['alg']!r}") from None
    pem = entry["public_key_pem"]
    if not isinstance(pem, str):
        raise InvalidKeyList(f"{where}: public_key_pem must be a string")
    try:
        public_key = load_public_key_pem(pem)
    except (InvalidKey, UnsupportedAlgorithm) as exc:
        raise InvalidKeyList(f"{where}: {exc}") from None
    if public_key.algorithm is not algorithm:
        raise InvalidKeyList(
            f"{where}: alg {algorithm.value} is not the key's {public_key.algorithm.value}"
        )
    try:
        status = KeyStatus(entry["status"])
        policy = CompromisePolicy(entry["compromise_policy"])
    except ValueError:
        raise InvalidKeyList(f"{where}: unknown status or compromise_policy") from None
    since = entry["compromised_since"]
    try:
        return TrustedKey(
            kid=bytes.fromhex(kid),
            province=province,
            public_key=public_key,
            use_from=_parse_time(entry["use_from"], where, "use_from"),
            use_until=_parse_time(entry["use_until"], where, "use_until"),
            verify_until=_parse_time(entry["verify_until"], where, "verify_until"),
            status=status,
            compromised_since=None if since is None else _parse_time(since, where, "compromised_since"),
            compromise_policy=policy,
        )
    except InvalidKey as exc:
        raise InvalidKeyList(f"{where}: {exc}") from None


def _key_to_dict(key: TrustedKey) -> dict[str, Any]:
    since = key.compromised_since
    return {
        "kid": key.kid.hex(),
        "alg": key.algorithm.value,
        "public_key_pem": key.public_key.pem(),
        "use_from": _format_time(key.use_from),
        "use_until": _format_time(key.use_until),
        "verify_until": _format_time(key.verify_until),
        "status": key.status.value,
        "compromised_since": None if since is None else _format_time(since),
        "compromise_policy": key.compromise_policy.value,
    }


def _parse_time(value: Any, where: str, name: str) -> _dt.datetime:
    match = _TIME_SHAPE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise InvalidKeyList(f"{where}: {name} must be YYYY-MM-DDTHH:MM:SSZ")
    try:
        year, month, day, hour, minute, second = map(int, match.groups())
        return _dt.datetime(year, month, day, hour, minute, second, tzinfo=_UTC)
    except ValueError:
        raise InvalidKeyList(f"{where}: {name} is not a valid time") from None


def _format_time(moment: _dt.datetime) -> str:
    return from_epoch(to_epoch(moment)).strftime(_TIME_FORMAT)


def _canonical(document: Any) -> bytes:
    return json.dumps(
        document, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False
    ).encode("ascii")


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for name, value in pairs:
        if name in result:
            raise ValueError(f"duplicate key {name!r}")
        result[name] = value
    return result


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")
