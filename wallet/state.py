"""The wallet's state on disk: one owner-only JSON file, replaced atomically.

``<wallet>/wallet.json`` (0600, in a 0700 directory) holds what the phone
keeps for offline use and nothing secret::

    {"format": "healthcode-wallet", "version": 1,
     "device": {"kind": "file"|"pkcs11", "handle": {...}, ["module", "token"]},
     "issuer": {"server", "ca", "api_key_file", "cert", "key"} | null,
     "credential": "EHC1:..." | null,
     "pending": {"operation": "enrol"|"renew", "idempotency_key", "serial"} | null,
     "last_failure": {"reason", "detail", "at"} | null}

The credential is personal data (it names the resident's main index ID), so
the file is owner-only like every secret. No document number, passphrase or
PIN is ever written. ``pending`` is written *before* an enrolment or renewal
call and cleared in the same write that stores its result: a wallet that
crashes in between sends the same idempotency key again, and the issuer
returns the code it minted the first time instead of a second one.

Every write goes through :func:`shellkit.files.write_file_atomically` (temp
file, fsync, rename, directory fsync), under :func:`shellkit.files.file_lock`
so two wallet processes never interleave.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pathlib
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

from healthcode import HealthCodeError, decode_unverified
from healthcode.codec import parse_core_claims, parse_optional_claims
from healthcode.model import from_epoch
from healthcode.presentation import holder_key_from_cnf
from shellkit.files import file_lock, require_private, write_file_atomically
from shellkit.times import iso_utc

from .device import DeviceKeyConfig
from .errors import BadCredential, NotInitialised, StateCorrupt

__all__ = ["Credential", "IssuerSettings", "Pending", "Failure", "WalletState", "StateFile", "STATE_NAME"]

STATE_NAME = "wallet.json"
_LOCK_NAME = ".wallet.lock"
_FORMAT = "healthcode-wallet"
_MAX_STATE_BYTES = 64 * 1024


@dataclass(frozen=True)
class Credential:
    """The credential the wallet holds, with the fields it reads from it (decoded, not verified)."""

    text: str
    province: str
    serial: int
    kid: bytes
    issued_at: dt.datetime
    expires_at: dt.datetime

    @classmethod
    def parse(cls, text: str, device_point: bytes | None) -> "Credential":
        """``text`` taken apart; raise :class:`BadCredential` unless it is a code bound to ``device_point``.

        The wallet cannot verify the issuer's signature (it holds no trust
        list), but it refuses to keep a credential that a terminal would
        refuse for sure: not a code, or bound to no key or to another one.
        """
        try:
            code = decode_unverified(text)
            province, _, iat, exp, serial = parse_core_claims(code.claims)
            cnf, _ = parse_optional_claims(code.claims)
            holder = holder_key_from_cnf(cnf)
        except HealthCodeError as exc:
            raise BadCredential(f"the issuer's credential is unusable: {exc}") from None
        if device_point is not None and holder.spki_der()[-65:] != device_point:
            raise BadCredential("the issuer's credential is bound to another device key")
        return cls(text, str(province), serial, code.kid, from_epoch(iat), from_epoch(exp))

    @classmethod
    def parse_unbound(cls, text: str) -> "Credential":
        """``text`` taken apart without comparing its holder key (for ``status``, which opens no key)."""
        return cls.parse(text, None)

    @property
    def validity(self) -> dt.timedelta:
        return self.expires_at - self.issued_at


@dataclass(frozen=True)
class IssuerSettings:
    """How to reach the issuer again (renewal): the address and the *paths* of the CA and credentials."""

    server: str
    ca: str
    api_key_file: str | None = None
    cert: str | None = None
    key: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"server": self.server, "ca": self.ca, "api_key_file": self.api_key_file, "cert": self.cert,
                "key": self.key}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "IssuerSettings":
        names = ("server", "ca", "api_key_file", "cert", "key")
        if set(data) != set(names) or not all(data[n] is None or isinstance(data[n], str) for n in names) \
                or not data["server"] or not data["ca"]:
            raise StateCorrupt("the wallet's issuer entry is malformed")
        return cls(**{n: data[n] for n in names})


@dataclass(frozen=True)
class Pending:
    """An enrolment or renewal sent but not yet stored: its idempotency key is reused until it is."""

    operation: str  # "enrol" | "renew"
    idempotency_key: str
    serial: int | None = None  # renew: the serial of the credential being renewed

    def to_json(self) -> dict[str, Any]:
        return {"operation": self.operation, "idempotency_key": self.idempotency_key, "serial": self.serial}


@dataclass(frozen=True)
class Failure:
    """The last failed attempt to reach the issuer, for ``status``."""

    reason: str
    detail: str
    at: dt.datetime

    def to_json(self) -> dict[str, Any]:
        return {"reason": self.reason, "detail": self.detail, "at": iso_utc(self.at)}


@dataclass(frozen=True)
class WalletState:
    """Everything in ``wallet.json``. Immutable: build a new one with :meth:`with_`."""

    device: DeviceKeyConfig
    issuer: IssuerSettings | None = None
    credential: str | None = None
    pending: Pending | None = None
    last_failure: Failure | None = None

    def with_(self, **changes: Any) -> "WalletState":
        return replace(self, **changes)

    def to_bytes(self) -> bytes:
        data = {
            "format": _FORMAT, "version": 1, "device": self.device.to_json(),
            "issuer": self.issuer.to_json() if self.issuer else None, "credential": self.credential,
            "pending": self.pending.to_json() if self.pending else None,
            "last_failure": self.last_failure.to_json() if self.last_failure else None,
        }
        return json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8") + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> "WalletState":
        try:
            data = json.loads(raw)
            if not isinstance(data, dict) or data.get("format") != _FORMAT or data.get("version") != 1:
                raise ValueError("not a healthcode-wallet v1 file")
            if set(data) != {"format", "version", "device", "issuer", "credential", "pending", "last_failure"}:
                raise ValueError("unexpected fields")
            credential = data["credential"]
            if credential is not None and not isinstance(credential, str):
                raise ValueError("credential is not text")
            return cls(DeviceKeyConfig.from_json(data["device"]),
                       IssuerSettings.from_json(data["issuer"]) if data["issuer"] is not None else None,
                       credential, _pending(data["pending"]), _failure(data["last_failure"]))
        except (ValueError, TypeError, KeyError, AttributeError):
            raise StateCorrupt("the wallet's state file is malformed") from None


def _pending(data: Any) -> Pending | None:
    if data is None:
        return None
    if set(data) != {"operation", "idempotency_key", "serial"} or data["operation"] not in ("enrol", "renew") \
            or not isinstance(data["idempotency_key"], str) or not (data["serial"] is None
                                                                    or type(data["serial"]) is int):
        raise ValueError("malformed pending entry")
    return Pending(data["operation"], data["idempotency_key"], data["serial"])


def _failure(data: Any) -> Failure | None:
    if data is None:
        return None
    at = dt.datetime.fromisoformat(data["at"].replace("Z", "+00:00"))
    if at.tzinfo is None or not isinstance(data["reason"], str) or not isinstance(data["detail"], str):
        raise ValueError("malformed failure entry")
    return Failure(data["reason"], data["detail"], at)


class StateFile:
    """``wallet.json`` in ``directory``: read, written atomically, and locked across processes."""

    def __init__(self, directory: os.PathLike[str] | str) -> None:
        self.directory = pathlib.Path(directory)
        self.path = self.directory / STATE_NAME

    def exists(self) -> bool:
        return self.path.exists()

    def ensure_directory(self) -> None:
        """Create the wallet directory owner-only (0700); tighten an existing one."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        if self.directory.stat().st_mode & 0o077:
            os.chmod(self.directory, 0o700)

    def read(self) -> WalletState:
        """The state; :class:`NotInitialised` if there is none, ``InsecureFileMode`` if others can read it."""
        if not self.path.exists():
            raise NotInitialised(f"no wallet in {self.directory}: run `healthcode-wallet init` first")
        require_private(self.path, what="wallet state file")
        with open(self.path, "rb") as handle:
            raw = handle.read(_MAX_STATE_BYTES + 1)
        if len(raw) > _MAX_STATE_BYTES:
            raise StateCorrupt("the wallet's state file is too large")
        return WalletState.from_bytes(raw)

    def write(self, state: WalletState) -> None:
        write_file_atomically(self.path, state.to_bytes())

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the wallet's lock (an ``flock`` on a sibling file) for the block."""
        with file_lock(self.directory / _LOCK_NAME):
            yield
