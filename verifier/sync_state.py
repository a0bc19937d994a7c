"""The trust sync's committed state (``<targets_dir>/state.json``): what is in force, by object id.

A :class:`SyncState` names, by SHA-256, the bytes a refresh verified (the root chain
after the bootstrap, timestamp, snapshot, national targets, and each province's role
and key list, :class:`ProvinceRecord`) and the highest key list serial seen per
province (rollback protection across refreshes). It is the commit point of
:class:`verifier.trustsync.TrustSync`: written after the objects it names
(:class:`verifier.objects.ObjectStore`), replaced atomically, and re-verified from the
bootstrap root whenever it is loaded (:mod:`verifier.tuf_verify`). Parsing is strict:
a state that is not exactly what :meth:`SyncState.to_bytes` writes is
:class:`~verifier.errors.TrustDataError`.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from healthcode.model import PROVINCES

from .errors import TrustDataError

__all__ = ["SyncState", "ProvinceRecord", "oldest", "SHA256_HEX"]

_STATE_TYPE = "healthcode-trust-state"
_STATE_FORMAT = 1
_MAX_STATE_BYTES = 1 << 20
#: An object id: SHA-256, lower-case hex.
SHA256_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True)
class ProvinceRecord:
    """One province in the committed state: its role and key list (object ids), serial, when verified."""

    role: str  # object id (SHA-256) of the province-<code> metadata
    keys: str  # object id of keys.json
    serial: int
    verified_at: _dt.datetime


@dataclass(frozen=True)
class SyncState:
    """The committed, verified state (``state.json``); object ids are SHA-256 hex."""

    refreshed_at: _dt.datetime
    roots: tuple[str, ...]  # root versions after the bootstrap, in order
    timestamp: str
    snapshot: str
    targets: str
    provinces: Mapping[str, ProvinceRecord]
    highest_serial: Mapping[str, int] = field(default_factory=dict)

    @property
    def last_verified_refresh(self) -> _dt.datetime:
        """The last verified refresh of the whole keyring: its oldest verified part.

        Equal to the last refresh when every province verified in it; a province
        kept on its last good key list holds it back, so staleness is noticed.
        """
        return min([self.refreshed_at, *(rec.verified_at for rec in self.provinces.values())])

    def to_bytes(self) -> bytes:
        document = {
            "type": _STATE_TYPE,
            "version": _STATE_FORMAT,
            "refreshed_at": self.refreshed_at.isoformat(),
            "roots": list(self.roots),
            "timestamp": self.timestamp,
            "snapshot": self.snapshot,
            "targets": self.targets,
            "provinces": {
                code: {
                    "role": rec.role,
                    "keys": rec.keys,
                    "serial": rec.serial,
                    "verified_at": rec.verified_at.isoformat(),
                }
                for code, rec in sorted(self.provinces.items())
            },
            "highest_serial": dict(sorted(self.highest_serial.items())),
        }
        return json.dumps(document, sort_keys=True, indent=1).encode("ascii")

    @classmethod
    def from_bytes(cls, data: bytes) -> "SyncState":
        if len(data) > _MAX_STATE_BYTES:
            raise TrustDataError("trust state file is too large")
        try:
            doc = json.loads(data)
            if doc["type"] != _STATE_TYPE or doc["version"] != _STATE_FORMAT:
                raise ValueError("unknown state format")
            objects = [doc["timestamp"], doc["snapshot"], doc["targets"], *doc["roots"]]
            provinces = {}
            for code, rec in doc["provinces"].items():
                if code not in PROVINCES:
                    raise ValueError(f"unknown province {code!r}")
                objects += [rec["role"], rec["keys"]]
                provinces[code] = ProvinceRecord(
                    rec["role"], rec["keys"], _int(rec["serial"]), _parse_time(rec["verified_at"])
                )
            if not all(isinstance(o, str) and SHA256_HEX.fullmatch(o) for o in objects):
                raise ValueError("bad object id")
            highest = {str(k): _int(v) for k, v in doc["highest_serial"].items()}
            return cls(
                _parse_time(doc["refreshed_at"]),
                tuple(doc["roots"]),
                doc["timestamp"],
                doc["snapshot"],
                doc["targets"],
                provinces,
                highest,
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise TrustDataError(f"trust state file is corrupt: {exc}") from None


def oldest(state: SyncState | None) -> _dt.datetime | None:
    """:attr:`SyncState.last_verified_refresh` of ``state``; None before the first refresh."""
    return state.last_verified_refresh if state is not None else None


def _parse_time(value: Any) -> _dt.datetime:
    moment = _dt.datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError("naive time in state")
    return moment


def _int(value: Any) -> int:
    if type(value) is not int or value < 0:
        raise ValueError("bad integer")
    return value
