"""The one error root of ``keys/``, and its stable reason codes.

Every failure of a keystore, of the key lifecycle or of the rotating signer is
a :class:`KeyManagementError`, one subclass per :class:`KeyReason`. The
reason's value is a stable lower-case string for logs, the CLI and the admin
API. Messages are short and name keys by kid, label or file, never by key
material: no private key, passphrase or PIN ever appears in one.

Grouped by cause:

* the operator's secret is wrong: ``wrong_passphrase``, ``wrong_pin``;
* the key is missing or unreadable: ``key_not_found``, ``key_file_corrupt``,
  ``unsupported_algorithm``;
* the backend failed: ``keystore_io`` (files), ``hsm_error`` (PKCS#11);
* the lifecycle refuses: ``policy_violation``, ``invalid_key_set``;
* signing is not possible now: ``no_active_key``, ``code_cap_reached``;
* the national trust repository refuses (nothing written): ``trust_repository``.
"""

from __future__ import annotations

import enum

__all__ = [
    "KeyReason",
    "KeyManagementError",
    "WrongPassphrase",
    "WrongPin",
    "KeyNotFound",
    "KeyFileCorrupt",
    "UnsupportedKeyAlgorithm",
    "KeystoreIOError",
    "HsmError",
    "PolicyViolation",
    "InvalidKeySet",
    "NoActiveKey",
    "CodeCapReached",
    "TrustRepoError",
]


class KeyReason(str, enum.Enum):
    """Why a key operation failed. The values are part of the public contract."""

    WRONG_PASSPHRASE = "wrong_passphrase"
    WRONG_PIN = "wrong_pin"
    KEY_NOT_FOUND = "key_not_found"
    KEY_FILE_CORRUPT = "key_file_corrupt"
    UNSUPPORTED_ALGORITHM = "unsupported_algorithm"
    KEYSTORE_IO = "keystore_io"
    HSM_ERROR = "hsm_error"
    POLICY_VIOLATION = "policy_violation"
    INVALID_KEY_SET = "invalid_key_set"
    NO_ACTIVE_KEY = "no_active_key"
    CODE_CAP_REACHED = "code_cap_reached"
    TRUST_REPOSITORY = "trust_repository"

    def __str__(self) -> str:
        return self.value


class KeyManagementError(Exception):
    """Root of every error raised by :mod:`keys`. ``reason`` is stable; ``detail`` is for humans."""

    reason: KeyReason = KeyReason.KEYSTORE_IO

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class WrongPassphrase(KeyManagementError):
    reason = KeyReason.WRONG_PASSPHRASE


class WrongPin(KeyManagementError):
    reason = KeyReason.WRONG_PIN


class KeyNotFound(KeyManagementError):
    reason = KeyReason.KEY_NOT_FOUND


class KeyFileCorrupt(KeyManagementError):
    reason = KeyReason.KEY_FILE_CORRUPT


class UnsupportedKeyAlgorithm(KeyManagementError):
    reason = KeyReason.UNSUPPORTED_ALGORITHM


class KeystoreIOError(KeyManagementError):
    reason = KeyReason.KEYSTORE_IO


class HsmError(KeyManagementError):
    reason = KeyReason.HSM_ERROR


class PolicyViolation(KeyManagementError):
    reason = KeyReason.POLICY_VIOLATION


class InvalidKeySet(KeyManagementError):
    reason = KeyReason.INVALID_KEY_SET


class NoActiveKey(KeyManagementError):
    reason = KeyReason.NO_ACTIVE_KEY


class CodeCapReached(KeyManagementError):
    reason = KeyReason.CODE_CAP_REACHED


class TrustRepoError(KeyManagementError):
    """An operation on the trust repository was refused; nothing was written."""

    reason = KeyReason.TRUST_REPOSITORY
