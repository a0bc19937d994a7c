"""The national servicers: ``NationalIndex`` (provinces) and ``HospitalResolution`` (hospitals).

Every request is parsed here, once, into domain values; every field problem
of a request is answered together as INVALID_ARGUMENT with
``google.rpc.BadRequest`` field violations (document fields are parsed by the
issuer's own parsers, :func:`issuer.wire.document_field`). The caller's
province and organisation come from its certificate
(:func:`national.admission.current_principal`), never from the request.
:data:`STATUS_BY_ERROR` is the one table from errors to status codes; anything
else is INTERNAL without detail. No message carries a document number.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import Any, Callable, Mapping, Sequence

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from healthcode import PROVINCES
from healthcode.model import from_epoch
from issuer.api import common_pb2
from issuer.wire import china_date, document_field, main_index_id_field, set_timestamp

from .admission import current_principal
from .api import national_index_pb2 as pb
from .api import national_index_pb2_grpc as pb_grpc
from .errors import (
    Aborted,
    CodeNotUsable,
    CodeRejected,
    Conflict,
    InvalidRequest,
    NationalError,
    NotFound,
    ProvinceUnavailable,
    Refused,
    Violations,
)
from .index import MAX_DOCUMENTS, Consent, ConsentMethod, NationalIndex
from .links import ProvinceRefused
from .resolution import MAX_CODE_CHARS, CodeResolver
from .store import StoreUnavailable

__all__ = ["NationalIndexServicer", "HospitalResolutionServicer", "STATUS_BY_ERROR", "error_status", "ERROR_DOMAIN",
           "CONSENT_MAX_AGE", "MAX_CLOCK_AHEAD"]

ERROR_DOMAIN = "national.healthcode"
#: A consent older than this is refused (the resident consents again).
CONSENT_MAX_AGE = dt.timedelta(days=30)
#: How far ahead of our clock a province's times may be.
MAX_CLOCK_AHEAD = dt.timedelta(minutes=5)
_EARLIEST = dt.datetime(2020, 1, 1, tzinfo=dt.timezone.utc)
_MAX_PAGE = 1000

STATUS_BY_ERROR: Mapping[type[BaseException], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    CodeRejected: grpc.StatusCode.INVALID_ARGUMENT,
    CodeNotUsable: grpc.StatusCode.FAILED_PRECONDITION,
    NotFound: grpc.StatusCode.NOT_FOUND,
    Conflict: grpc.StatusCode.FAILED_PRECONDITION,
    Refused: grpc.StatusCode.PERMISSION_DENIED,
    ProvinceUnavailable: grpc.StatusCode.UNAVAILABLE,
    StoreUnavailable: grpc.StatusCode.UNAVAILABLE,
    Aborted: grpc.StatusCode.ABORTED,
}


def status_code_for(error: BaseException) -> grpc.StatusCode:
    if isinstance(error, ProvinceRefused):
        return error.code  # the home province's own answer, passed on
    for cls in type(error).__mro__:
        code = STATUS_BY_ERROR.get(cls)
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


def error_status(error: BaseException) -> grpc.Status:
    """The status for ``error``: code, message, BadRequest violations and ErrorInfo(reason, domain)."""
    code = status_code_for(error)
    details: list[Any] = []
    if code is grpc.StatusCode.INTERNAL and not isinstance(error, ProvinceRefused):
        message = "internal error"
    else:
        message = getattr(error, "message", None) or str(error) or code.name.lower()
        if isinstance(error, InvalidRequest):
            message = "invalid request: " + message
            details.append(error_details_pb2.BadRequest(field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=v.field, description=v.description,
                                                            reason=v.code.upper())
                for v in error.violations]))
        elif isinstance(error, CodeRejected):  # INVALID_ARGUMENT like any bad field: say which one
            details.append(error_details_pb2.BadRequest(field_violations=[error_details_pb2.BadRequest.FieldViolation(
                field="code", description=message, reason=error.reason.upper())]))
        if isinstance(error, NationalError):
            details.append(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain=ERROR_DOMAIN,
                                                       metadata=getattr(error, "metadata", None) or {}))
    proto = status_pb2.Status(code=code.value[0], message=message[:1000])
    for detail in details:
        proto.details.add().Pack(detail)
    return rpc_status.to_status(proto)


async def _answer(context: Any, call: Callable[[], Any]) -> Any:
    try:
        return await call()
    except NationalError as e:
        await context.abort_with_status(error_status(e))
    except Exception as e:  # noqa: BLE001 - a bug: INTERNAL without detail (logged by type only)
        import logging

        logging.getLogger("national.service").error("unexpected error: %s", type(e).__name__)
        await context.abort_with_status(error_status(e))


def _time(ts: Any, present: bool, path: str, out: Violations, now: dt.datetime, *,
          required: bool) -> dt.datetime | None:
    if not present:
        if required:
            out.add(path, "a time is required", "required")
        return None
    if ts.nanos != 0:
        out.add(path, "times are whole seconds", "format")
        return None
    try:
        moment = from_epoch(ts.seconds)
    except (OverflowError, ValueError):
        out.add(path, "time out of range", "range")
        return None
    if moment > now + MAX_CLOCK_AHEAD:
        out.add(path, "time is in the future", "future")
        return None
    if moment < _EARLIEST:
        out.add(path, "time is before 2020", "range")
        return None
    return moment


class NationalIndexServicer(pb_grpc.NationalIndexServicer):
    """Provinces: ClaimIdentity, TransferResident, ListEvents (for the calling province only)."""

    def __init__(self, index: NationalIndex, *, clock: Callable[[], dt.datetime]) -> None:
        self._index = index
        self._clock = clock

    async def ClaimIdentity(self, request: pb.ClaimIdentityRequest, context: Any) -> pb.ClaimIdentityResponse:
        async def call() -> pb.ClaimIdentityResponse:
            now = self._clock()
            province = current_principal().province
            out = Violations()
            mid = main_index_id_field(request.main_index_id, "main_index_id", out)
            docs: Sequence[Any] = request.documents
            if not docs:
                out.add("documents", "at least one document is required", "required")
            elif len(docs) > MAX_DOCUMENTS:
                out.add("documents", f"at most {MAX_DOCUMENTS} documents", "count")
                docs = []
            today = china_date(now)
            parsed = [document_field(d, True, f"documents[{i}]", today, out) for i, d in enumerate(docs)]
            registered_at = _time(request.registered_at, request.HasField("registered_at"), "registered_at", out,
                                  now, required=request.provisional)
            if request.home_province and request.home_province not in PROVINCES:
                out.add("home_province", "a GB/T 2260 province code (two digits), or empty", "invalid")
            out.raise_if_any()
            if request.home_province and request.home_province != province:
                raise Refused(f"a province claims for itself only: this certificate is province {province}")
            assert mid is not None
            result = await asyncio.to_thread(
                self._index.claim, province=province, main_index_id=mid, documents=[d for d in parsed if d],
                provisional=request.provisional, registered_at=registered_at, now=now)
            outcome = pb.ClaimOutcome.Value(f"CLAIM_OUTCOME_{result.outcome.name}")
            return pb.ClaimIdentityResponse(outcome=outcome, main_index_id=result.main_index_id,
                                            home_province=result.home_province)

        return await _answer(context, call)

    async def TransferResident(self, request: pb.TransferResidentRequest,
                               context: Any) -> pb.TransferResidentResponse:
        async def call() -> pb.TransferResidentResponse:
            now = self._clock()
            province = current_principal().province
            out = Violations()
            mid = main_index_id_field(request.main_index_id, "main_index_id", out)
            doc = document_field(request.document, request.HasField("document"), "document", china_date(now), out)
            consent = self._consent(request, now, out)
            out.raise_if_any()
            assert mid is not None and doc is not None and consent is not None
            result = await self._index.transfer(province=province, main_index_id=mid, document=doc, consent=consent,
                                                now=now)
            return pb.TransferResidentResponse(main_index_id=result.main_index_id,
                                               previous_province=result.previous_province)

        return await _answer(context, call)

    @staticmethod
    def _consent(request: pb.TransferResidentRequest, now: dt.datetime, out: Violations) -> Consent | None:
        if not request.HasField("consent"):
            out.add("consent", "the resident's consent is required", "required")
            return None
        c = request.consent
        method = None
        try:
            method = ConsentMethod(c.method)
        except ValueError:
            out.add("consent.method", "how the resident consented is required (in person or in the app)",
                    "required" if c.method == 0 else "invalid")
        given_at = _time(c.given_at, c.HasField("given_at"), "consent.given_at", out, now, required=True)
        if given_at is not None and given_at < now - CONSENT_MAX_AGE:
            out.add("consent.given_at", f"consent is older than {CONSENT_MAX_AGE.days} days", "expired")
            given_at = None
        if not 1 <= len(c.reference) <= 64 or not all(" " <= ch <= "~" for ch in c.reference):
            out.add("consent.reference", "1 to 64 printable ASCII characters", "format")
            return None
        if method is None or given_at is None:
            return None
        return Consent(method, given_at, c.reference)

    async def ListEvents(self, request: pb.ListEventsRequest, context: Any) -> pb.ListEventsResponse:
        async def call() -> pb.ListEventsResponse:
            province = current_principal().province
            out = Violations()
            size = request.page_size or 100
            if size > _MAX_PAGE:
                out.add("page_size", f"at most {_MAX_PAGE}", "range")
            if request.after_sequence >= 2**63:
                out.add("after_sequence", "out of range", "range")
            out.raise_if_any()
            rows = await asyncio.to_thread(self._index.events, province, after=request.after_sequence, limit=size)
            response = pb.ListEventsResponse()
            for row in rows:
                event = response.events.add(sequence=row.sequence, kind=row.kind, main_index_id=row.main_index_id,
                                            other_main_index_id=row.other_main_index_id or "",
                                            other_province=row.other_province)
                set_timestamp(event.recorded_at, from_epoch(row.recorded_at))
            return response

        return await _answer(context, call)


class HospitalResolutionServicer(pb_grpc.HospitalResolutionServicer):
    """Hospitals: ResolveCode, verified here and routed to the code's home province."""

    def __init__(self, resolver: CodeResolver, *, clock: Callable[[], dt.datetime]) -> None:
        self._resolver = resolver
        self._clock = clock

    async def ResolveCode(self, request: pb.ResolveCodeRequest, context: Any) -> pb.ResolveCodeResponse:
        async def call() -> pb.ResolveCodeResponse:
            now = self._clock()
            hospital = current_principal()
            out = Violations()
            if not request.code:
                out.add("code", "the scanned code is required", "required")
            elif len(request.code) > MAX_CODE_CHARS:  # before any parsing
                out.add("code", f"a code has at most {MAX_CODE_CHARS} characters", "too_long")
            if request.purpose == pb.PURPOSE_UNSPECIFIED:
                out.add("purpose", "why the hospital resolves the code is required", "required")
            elif request.purpose not in pb.Purpose.values():
                out.add("purpose", "unknown purpose", "invalid")
            out.raise_if_any()
            resolved = await self._resolver.resolve(code=request.code, purpose=int(request.purpose),
                                                    organisation=hospital.organisation,
                                                    hospital_province=hospital.province, now=now)
            answer = resolved.answer
            response = pb.ResolveCodeResponse(main_index_id=resolved.main_index_id,
                                              home_province=resolved.home_province, access_id=answer.access_id)
            doc = answer.primary_document
            response.primary_document.type = common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{doc.type.name}")
            response.primary_document.number = doc.number
            if doc.country:
                response.primary_document.country = doc.country
            set_timestamp(response.resolved_at, answer.resolved_at)
            return response

        return await _answer(context, call)
