"""The national service's one error root, with stable reason codes.

Domain code raises these; :mod:`national.wire` maps them to gRPC status codes
in exactly one table. Messages never contain document numbers, and main index
IDs only where the caller sent them or is entitled to them.
"""

from __future__ import annotations

from issuer.errors import FieldViolation
from issuer.errors import Violations as _IssuerViolations

__all__ = [
    "NationalError",
    "InvalidRequest",
    "Violations",
    "NotFound",
    "Conflict",
    "HomedElsewhere",
    "Refused",
    "CodeRejected",
    "CodeNotUsable",
    "ProvinceUnavailable",
    "Aborted",
    "ConfigError",
    "NationalKeyError",
    "FieldViolation",
]


class NationalError(Exception):
    """Root of every error raised by :mod:`national`. ``reason`` is stable (upper-cased in ErrorInfo)."""

    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(NationalError):
    """The request is malformed; ``violations`` say which fields and why (-> INVALID_ARGUMENT)."""

    reason = "invalid_argument"

    def __init__(self, violations: list[FieldViolation] | tuple[FieldViolation, ...], message: str = "") -> None:
        self.violations = tuple(violations)
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in self.violations))


class Violations(_IssuerViolations):
    """Collects a request's field violations (the issuer's wire parsers add to it); raises ours."""

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidRequest(self.items)


class NotFound(NationalError):
    """No such identity, or the document is not held by it (-> NOT_FOUND)."""

    reason = "not_found"


class Conflict(NationalError):
    """The request contradicts the national state (-> FAILED_PRECONDITION)."""

    reason = "failed_precondition"


class HomedElsewhere(Conflict):
    """A document was to be added to an identity homed in another province (-> FAILED_PRECONDITION)."""

    reason = "homed_elsewhere"


class Refused(NationalError):
    """The caller may not do this: a claim for another province (-> PERMISSION_DENIED)."""

    reason = "permission_denied"


class CodeRejected(NationalError):
    """The scanned code is not a valid code: malformed, forged, unknown key (-> INVALID_ARGUMENT).

    ``reason`` is the core's reason (``bad_signature``, ``unknown_key`` ...).
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class CodeNotUsable(NationalError):
    """The code verified but cannot be used now: expired, not yet valid, stale (-> FAILED_PRECONDITION)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class ProvinceUnavailable(NationalError):
    """A province's NationalLink could not be reached or did not answer in time (-> UNAVAILABLE).

    Nothing was changed nationally. ``province`` is the one that could not be
    reached; the status's ErrorInfo carries it as metadata ``province`` (a
    province's desk tells the clerk which one).
    """

    reason = "province_unavailable"

    def __init__(self, message: str, province: str = "") -> None:
        super().__init__(message)
        self.province = province
        self.metadata = {"province": province} if province else {}


class Aborted(NationalError):
    """The state changed while the request was in flight; retry it (-> ABORTED)."""

    reason = "aborted"


class ConfigError(NationalError, ValueError):
    """The configuration is incomplete or inconsistent; the message says which setting."""

    reason = "config"


class NationalKeyError(NationalError):
    """The national key cannot be created, opened or used (never a message with key material)."""

    reason = "national_key"
