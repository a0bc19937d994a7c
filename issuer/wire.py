"""The wire side shared by the servicers: request fields parsed into domain values, domain values
written back, and domain errors mapped to gRPC statuses in one table.

Every parser here adds its violations to a :class:`~issuer.errors.Violations`
(field paths name request fields) and returns ``None`` for a bad field, so a
servicer answers every violation of a request together as INVALID_ARGUMENT.
:data:`STATUS_BY_ERROR` is the one table from errors to status codes; anything
not in it is INTERNAL, answered without detail. Status messages never carry
document numbers, main index IDs or code texts.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Mapping, Sequence

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from healthcode import InvalidClaims, MainIndexId, parse_main_index_id
from issuer.api import common_pb2
from issuer.documents import Document, DocumentError, DocumentType, parse_document
from issuer.errors import (
    AlreadyExists,
    Conflict,
    InvalidRequest,
    IssuerError,
    NoSigningKey,
    NotFound,
    Unavailable,
    Violations,
)
from issuer.model import (
    IDEMPOTENCY_KEY_RULE,
    CodeState,
    IdempotencyKey,
    IssuedCode,
    RevocationReason,
    parse_idempotency_key,
)

__all__ = [
    "ERROR_DOMAIN",
    "DeadlineExceeded",
    "STATUS_BY_ERROR",
    "status_code_for",
    "error_status",
    "received_error_info",
    "REASONS",
    "CLIENT_REASONS",
    "document_field",
    "main_index_id_field",
    "idempotency_key_field",
    "issued_code_pb",
    "set_timestamp",
    "china_date",
]

ERROR_DOMAIN = "issuer.healthcode"
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8), "CST")
_MAX_STATUS_MESSAGE = 1000


# --------------------------------------------------------------------------- errors -> status codes


class DeadlineExceeded(IssuerError):
    """The RPC's deadline is too close to start the next domain call (-> DEADLINE_EXCEEDED, no ErrorInfo)."""

    reason = "deadline_exceeded"


#: The one table from errors to status codes. Looked up along the error's MRO;
#: anything not here is INTERNAL, answered without detail.
STATUS_BY_ERROR: Mapping[type[BaseException], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotFound: grpc.StatusCode.NOT_FOUND,
    AlreadyExists: grpc.StatusCode.ALREADY_EXISTS,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    NoSigningKey: grpc.StatusCode.FAILED_PRECONDITION,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    for cls in type(error).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def _status(code: grpc.StatusCode, message: str, details: Sequence[Any] = ()) -> grpc.Status:
    if len(message) > _MAX_STATUS_MESSAGE:
        message = message[: _MAX_STATUS_MESSAGE - 3] + "..."
    proto = status_pb2.Status(code=code.value[0], message=message)
    for detail in details:
        proto.details.add().Pack(detail)
    return rpc_status.to_status(proto)


def error_status(error: BaseException) -> grpc.Status:
    code = status_code_for(error)
    if code is grpc.StatusCode.INTERNAL:
        return _status(code, "internal error")
    message = getattr(error, "message", None) or str(error) or code.name.lower()
    details: list[Any] = []
    if isinstance(error, InvalidRequest):
        message = "invalid request: " + message
        details.append(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description, reason=v.code.upper()
                    )
                    for v in error.violations
                ]
            )
        )
    if isinstance(error, IssuerError) and not isinstance(error, DeadlineExceeded):  # as before it joined the root
        details.append(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain=ERROR_DOMAIN,
                                                   metadata=getattr(error, "metadata", None) or {}))
    return _status(code, message, details)


def received_error_info(error: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """The ``google.rpc.ErrorInfo`` a server put in a failed call's status, or None (none, or unreadable)."""
    try:
        status = rpc_status.from_call(error)
    except (AttributeError, TypeError, ValueError):  # no trailing metadata, or a status that contradicts it
        return None
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


# --------------------------------------------------------------------------- request fields


_DOCUMENT_TYPES: Mapping[int, DocumentType] = {
    common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{t.name}"): t for t in DocumentType
}
REASONS: Mapping[common_pb2.RevocationReason, RevocationReason] = {
    common_pb2.RevocationReason.Value(f"REVOCATION_REASON_{r.name}"): r for r in RevocationReason
}
REASON_VALUES: Mapping[RevocationReason, common_pb2.RevocationReason] = {r: v for v, r in REASONS.items()}
CLIENT_REASONS = frozenset(RevocationReason) - {RevocationReason.MERGED, RevocationReason.SUPERSEDED}
_STATE_VALUES: Mapping[CodeState, common_pb2.CodeState] = {
    s: common_pb2.CodeState.Value(f"CODE_STATE_{s.name}") for s in CodeState
}


def document_field(msg: common_pb2.Document, present: bool, path: str, today: dt.date,
                   out: Violations) -> Document | None:
    if not present:
        out.add(path, "document is required", "required")
        return None
    doc_type = _DOCUMENT_TYPES.get(msg.type)
    if doc_type is None:
        if msg.type == common_pb2.DOCUMENT_TYPE_UNSPECIFIED:
            out.add(f"{path}.type", "document type is required", "required")
        else:
            out.add(f"{path}.type", "unknown document type", "type")
        if not msg.number:
            out.add(f"{path}.number", "number is required", "required")
        return None
    try:
        return parse_document(doc_type, msg.number, country=msg.country or None, today=today)
    except DocumentError as e:
        for v in e.violations:
            out.add(f"{path}.{v.field}", v.description, v.code)
        return None


def main_index_id_field(value: str, path: str, out: Violations) -> MainIndexId | None:
    """The main index ID at ``path``, parsed once here (the domain takes :class:`MainIndexId`)."""
    if not value:
        out.add(path, "main index ID is required", "required")
        return None
    try:
        return parse_main_index_id(value)
    except InvalidClaims:
        out.add(path, "main index ID must be 26 Base32 characters (128 bits)", "format")
        return None


def idempotency_key_field(value: str, out: Violations) -> IdempotencyKey | None:
    """The request's idempotency key (absent: ``None``), parsed once here by the one rule
    (:func:`issuer.model.parse_idempotency_key`)."""
    if not value:
        return None
    try:
        return parse_idempotency_key(value)
    except ValueError:
        out.add("idempotency_key", IDEMPOTENCY_KEY_RULE, "format")
        return None


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def set_timestamp(ts: timestamp_pb2.Timestamp, moment: dt.datetime) -> None:
    """A timestamp written into an existing field (no message built and copied)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime from the domain")
    delta = moment - _EPOCH
    ts.seconds = delta.days * 86400 + delta.seconds
    ts.nanos = delta.microseconds * 1000


def issued_code_pb(code: IssuedCode, now: dt.datetime,
                    into: common_pb2.IssuedCode | None = None) -> common_pb2.IssuedCode:
    """The wire form of ``code``, filled in place into ``into`` (a response's field) if given."""
    msg = common_pb2.IssuedCode() if into is None else into
    ref = code.ref
    msg.ref.province = ref.province
    msg.ref.kid = ref.kid
    msg.ref.serial = ref.serial
    msg.main_index_id = code.main_index_id
    msg.code_text = code.text
    set_timestamp(msg.issued_at, code.issued_at)
    set_timestamp(msg.expires_at, code.expires_at)
    msg.state = _STATE_VALUES[code.state(now)]
    if code.revoked_at is not None:
        set_timestamp(msg.revoked_at, code.revoked_at)
    if code.revocation_reason is not None:
        msg.revocation_reason = REASON_VALUES[RevocationReason(code.revocation_reason)]
    return msg


def china_date(now: dt.datetime) -> dt.date:
    return now.astimezone(CHINA_STANDARD_TIME).date()
