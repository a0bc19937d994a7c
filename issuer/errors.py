"""The issuer's one error root, with stable reason codes.

Domain code raises these; ``issuer/wire.py`` maps them to gRPC status codes
in exactly one table. Messages never contain document numbers or names.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a request field path (e.g. ``primary.number``)."""

    field: str
    description: str
    code: str = "invalid"


class IssuerError(Exception):
    """Root of every error raised by :mod:`issuer`. ``reason`` is stable."""

    reason = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidRequest(IssuerError):
    """The request is malformed; ``violations`` say which fields and why (-> INVALID_ARGUMENT)."""

    reason = "invalid_argument"

    def __init__(self, violations: list[FieldViolation] | tuple[FieldViolation, ...], message: str = "") -> None:
        self.violations = tuple(violations)
        super().__init__(message or "; ".join(f"{v.field}: {v.description}" for v in self.violations))


class Violations:
    """Collects the field violations of one request; :meth:`raise_if_any` raises them together."""

    def __init__(self) -> None:
        self.items: list[FieldViolation] = []

    def add(self, field: str, description: str, code: str = "invalid") -> None:
        self.items.append(FieldViolation(field=field, description=description, code=code))

    def raise_if_any(self) -> None:
        if self.items:
            raise InvalidRequest(self.items)


class NotFound(IssuerError):
    """No such resident or code (-> NOT_FOUND)."""

    reason = "not_found"


class AlreadyExists(IssuerError):
    """A document is already linked to a resident (-> ALREADY_EXISTS)."""

    reason = "already_exists"


class Conflict(IssuerError):
    """The request contradicts the state: a merged resident, an idempotency key reused
    with different parameters (-> FAILED_PRECONDITION)."""

    reason = "failed_precondition"


class Unavailable(IssuerError):
    """The store cannot take the request now: shutting down or overloaded (-> UNAVAILABLE)."""

    reason = "unavailable"


class NoSigningKey(IssuerError):
    """No usable signing key for the province at this time (-> FAILED_PRECONDITION)."""

    reason = "no_signing_key"
