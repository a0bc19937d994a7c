"""The one error root of the core, and the stable reason codes.

Every failure the core reports is a :class:`HealthCodeError`. Verification
failures are :class:`VerificationError` subclasses, one per :class:`Reason`;
the reason's value is a stable, lower-case string that scanners, the audit log,
test vectors and the gRPC layer all use. Messages are short and never contain
key material or a resident's identifiers.
"""

from __future__ import annotations

import enum


class Reason(str, enum.Enum):
    """Why a code was refused. The values are part of the public contract."""

    MALFORMED = "malformed"
    UNSUPPORTED_VERSION = "unsupported_version"
    UNKNOWN_KEY = "unknown_key"
    ALGORITHM_MISMATCH = "algorithm_mismatch"
    BAD_SIGNATURE = "bad_signature"
    NOT_YET_VALID = "not_yet_valid"
    EXPIRED = "expired"
    KEY_NOT_VALID_AT_ISSUANCE = "key_not_valid_at_issuance"
    KEY_COMPROMISED = "key_compromised"
    REVOKED = "revoked"
    TRUST_DATA_STALE = "trust_data_stale"
    # dynamic presentations (docs/code-format.md section 16)
    PRESENTATION_REQUIRED = "presentation_required"
    NO_HOLDER_KEY = "no_holder_key"
    STALE_PRESENTATION = "stale_presentation"
    FUTURE_PRESENTATION = "future_presentation"
    BAD_DEVICE_SIGNATURE = "bad_device_signature"
    REPLAYED = "replayed"

    def __str__(self) -> str:
        return self.value


class HealthCodeError(Exception):
    """Root of every error raised by :mod:`healthcode`."""


class InvalidClaims(HealthCodeError, ValueError):
    """Claims handed to the signer break the format (bad province, serial, window...)."""


class InvalidKey(HealthCodeError, ValueError):
    """A key or key description is unusable (bad PEM, wrong curve, bad window)."""


class UnsupportedAlgorithm(HealthCodeError):
    """The algorithm is unknown, or its optional backend (``sm2`` extra) is not installed."""


class VerificationError(HealthCodeError):
    """A code was refused. ``reason`` is stable; ``detail`` is for humans."""

    reason: Reason = Reason.MALFORMED

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"


class MalformedCode(VerificationError):
    reason = Reason.MALFORMED


class UnsupportedVersion(VerificationError):
    reason = Reason.UNSUPPORTED_VERSION


class UnknownKey(VerificationError):
    reason = Reason.UNKNOWN_KEY


class AlgorithmMismatch(VerificationError):
    reason = Reason.ALGORITHM_MISMATCH


class BadSignature(VerificationError):
    reason = Reason.BAD_SIGNATURE


class NotYetValid(VerificationError):
    reason = Reason.NOT_YET_VALID


class Expired(VerificationError):
    reason = Reason.EXPIRED


class KeyNotValidAtIssuance(VerificationError):
    reason = Reason.KEY_NOT_VALID_AT_ISSUANCE


class KeyCompromised(VerificationError):
    reason = Reason.KEY_COMPROMISED


class Revoked(VerificationError):
    reason = Reason.REVOKED


class TrustDataStale(VerificationError):
    reason = Reason.TRUST_DATA_STALE


class PresentationRequired(VerificationError):
    """A credential bound to a device key (``cnf``) was shown without its device signature."""

    reason = Reason.PRESENTATION_REQUIRED


class NoHolderKey(VerificationError):
    """A presentation's credential has no usable holder key (no ``cnf``, or an unsupported key)."""

    reason = Reason.NO_HOLDER_KEY


class StalePresentation(VerificationError):
    """The presentation's time step is older than the accepted window (a screenshot, a replay)."""

    reason = Reason.STALE_PRESENTATION


class FuturePresentation(VerificationError):
    """The presentation's time step is ahead of the accepted window (a clock far ahead)."""

    reason = Reason.FUTURE_PRESENTATION


class BadDeviceSignature(VerificationError):
    """The device signature does not verify with the credential's holder key."""

    reason = Reason.BAD_DEVICE_SIGNATURE


class Replayed(VerificationError):
    """This presentation (credential and time step) was already accepted here."""

    reason = Reason.REPLAYED


ERROR_FOR_REASON: dict[Reason, type[VerificationError]] = {
    cls.reason: cls
    for cls in (
        MalformedCode,
        UnsupportedVersion,
        UnknownKey,
        AlgorithmMismatch,
        BadSignature,
        NotYetValid,
        Expired,
        KeyNotValidAtIssuance,
        KeyCompromised,
        Revoked,
        TrustDataStale,
        PresentationRequired,
        NoHolderKey,
        StalePresentation,
        FuturePresentation,
        BadDeviceSignature,
        Replayed,
    )
}


class RevocationDataError(HealthCodeError):
    """Revocation data is malformed, inconsistent, or does not fit the state it is applied to."""


class RevocationSequenceError(RevocationDataError):
    """A delta or snapshot is out of order: a gap (fetch a snapshot), a replay or a rollback."""
