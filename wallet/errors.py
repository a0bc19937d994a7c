"""The one error root of ``wallet/``, and its stable reason codes.

Every failure the wallet can meet is a :class:`WalletError`, one subclass per
:class:`WalletReason`. The reason's value is a stable lower-case string (what
an app maps to its own screens); the detail is one sentence for people.
Messages never carry the document number, the passphrase, the PIN or key
material.

* the wallet on disk: ``not_initialised``, ``already_initialised``,
  ``not_enrolled``, ``state_corrupt``;
* the device key: ``device_key`` (wrong passphrase or PIN, missing key or
  token, a token that cannot sign);
* the issuer: ``offline`` (cannot be reached now: try again later; the
  credential keeps working until it expires), ``revoked`` (the credential was
  revoked: enrol again), ``refused`` (the issuer said no for another reason),
  ``bad_credential`` (the issuer returned a credential that is not bound to
  this device: never kept);
* presenting: ``expired`` (the credential is past its expiry: renew or enrol).
"""

from __future__ import annotations

import enum

__all__ = [
    "WalletReason",
    "WalletError",
    "NotInitialised",
    "AlreadyInitialised",
    "NotEnrolled",
    "StateCorrupt",
    "DeviceKeyError",
    "Offline",
    "CredentialRevoked",
    "IssuerRefused",
    "BadCredential",
    "CredentialExpired",
]


class WalletReason(str, enum.Enum):
    """Why a wallet operation failed. The values are part of the public contract."""

    NOT_INITIALISED = "not_initialised"
    ALREADY_INITIALISED = "already_initialised"
    NOT_ENROLLED = "not_enrolled"
    STATE_CORRUPT = "state_corrupt"
    DEVICE_KEY = "device_key"
    OFFLINE = "offline"
    REVOKED = "revoked"
    REFUSED = "refused"
    BAD_CREDENTIAL = "bad_credential"
    EXPIRED = "expired"

    def __str__(self) -> str:
        return self.value


class WalletError(Exception):
    """Root of every error raised by :mod:`wallet`. ``reason`` is stable; ``detail`` is for people."""

    reason: WalletReason = WalletReason.REFUSED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class NotInitialised(WalletError):
    reason = WalletReason.NOT_INITIALISED


class AlreadyInitialised(WalletError):
    reason = WalletReason.ALREADY_INITIALISED


class NotEnrolled(WalletError):
    reason = WalletReason.NOT_ENROLLED


class StateCorrupt(WalletError):
    reason = WalletReason.STATE_CORRUPT


class DeviceKeyError(WalletError):
    reason = WalletReason.DEVICE_KEY


class Offline(WalletError):
    reason = WalletReason.OFFLINE


class CredentialRevoked(WalletError):
    reason = WalletReason.REVOKED


class IssuerRefused(WalletError):
    reason = WalletReason.REFUSED


class BadCredential(WalletError):
    reason = WalletReason.BAD_CREDENTIAL


class CredentialExpired(WalletError):
    reason = WalletReason.EXPIRED
