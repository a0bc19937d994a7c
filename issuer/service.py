"""The gRPC servicers: wire requests in, domain calls, wire responses out.

Each RPC runs the same steps, marked in :meth:`IssuerService._serve`:

1. read the clock once (``now``), passed down to every domain call;
2. refuse at once with DEADLINE_EXCEEDED if the remaining time is too short;
3. validate *every* request field and convert it to domain types (documents
   through :func:`issuer.documents.parse_document`); all violations are
   collected and answered together as INVALID_ARGUMENT with a
   ``google.rpc.BadRequest`` detail whose field paths name request fields
   (``primary.number``, ``supplementary[2].country``, ``ref.kid``);
4. call the domain. The domain call runs as its own task, shielded from the
   RPC: if the deadline passes (or the client goes away) while it awaits the
   store, gRPC cancels the RPC (the client sees DEADLINE_EXCEEDED or
   CANCELLED) but the call still finishes, so a durable commit is never cut
   in half and an idempotent retry returns the same code;
5. map a domain error to a status code with :data:`STATUS_BY_ERROR`, the one
   table; anything unexpected becomes INTERNAL with no detail.

Wire types never leave this module: the domain sees :class:`Document`,
:class:`CodeRef`, :class:`RevocationReason`, and returns :class:`IssuedCode`.
Status messages and logs never carry document numbers, main index IDs or code
texts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Protocol, Sequence, TypeVar

import grpc
from google.protobuf import timestamp_pb2
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from healthcode import PROVINCES, InvalidClaims, parse_main_index_id
from healthcode.codec import MAX_TEXT_LENGTH
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc
from issuer.documents import Document, DocumentError, DocumentType, canonical_form, parse_document
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
from issuer.model import CodeRef, CodeState, IssuedCode, RevocationReason

__all__ = [
    "ResidentIndexPort",
    "CodeIssuerPort",
    "ServiceSettings",
    "IssuerService",
    "DeadlineExceeded",
    "STATUS_BY_ERROR",
    "status_code_for",
    "ERROR_DOMAIN",
]

log = logging.getLogger("issuer.service")

ERROR_DOMAIN = "issuer.healthcode"
CHINA_STANDARD_TIME = dt.timezone(dt.timedelta(hours=8), "CST")
MAX_SUPPLEMENTARY = 16
MAX_KID_BYTES = 32
MAX_SCALE = 64
MAX_BORDER = 16
DEFAULT_SCALE = 4
DEFAULT_BORDER = 4
IDEMPOTENCY_KEY = re.compile(r"^[A-Za-z0-9._:-]{8,128}$")
_MAX_STATUS_MESSAGE = 1000

T = TypeVar("T")


# --------------------------------------------------------------------------- the domain's seams


class ResidentIndexPort(Protocol):
    """What the servicer needs of the resident main index (``issuer.index.ResidentIndex``)."""

    async def register_resident(
        self, primary: Document, supplementary: Sequence[Document] = (), *, now: dt.datetime
    ) -> str: ...

    async def link_identifier(self, main_index_id: str, document: Document, *, now: dt.datetime) -> None: ...

    async def find_resident(self, document: Document) -> str: ...

    async def merge_residents(self, *, survivor: str, merged: str, now: dt.datetime) -> int: ...


class CodeIssuerPort(Protocol):
    """What the servicer needs of issuance (``issuer.issuance.CodeIssuer``)."""

    async def issue_code(
        self, *, caller: str, main_index_id: str, idempotency_key: str | None, now: dt.datetime,
        replace_live: bool = False,
    ) -> IssuedCode: ...

    # ``text``: the request named the code by its text, whose fields are unverified; the
    # domain finds the code only if ``text`` is exactly the one issued (else NotFound).

    async def renew_code(
        self, *, caller: str, ref: CodeRef, idempotency_key: str | None, now: dt.datetime, text: str | None = None
    ) -> IssuedCode: ...

    async def revoke_code(
        self, *, ref: CodeRef, reason: RevocationReason, now: dt.datetime, text: str | None = None
    ) -> IssuedCode: ...

    async def revoke_resident_codes(self, *, main_index_id: str, reason: RevocationReason, now: dt.datetime) -> int: ...

    async def get_code(self, ref: CodeRef, *, text: str | None = None) -> IssuedCode: ...

    def ref_from_text(self, text: str) -> CodeRef: ...


# --------------------------------------------------------------------------- errors -> status codes


class DeadlineExceeded(Exception):
    """The RPC's deadline is too close to start the next domain call."""


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


def _error_status(error: BaseException) -> grpc.Status:
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
    if isinstance(error, IssuerError):
        details.append(error_details_pb2.ErrorInfo(reason=error.reason.upper(), domain=ERROR_DOMAIN))
    return _status(code, message, details)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, kw_only=True)
class ServiceSettings:
    """How the servicers behave. ``province`` is this issuer's GB/T 2260 code."""

    province: str
    #: Refuse to start work with less than this many seconds before the deadline.
    min_time_remaining: float = 0.010

    def __post_init__(self) -> None:
        if self.province not in PROVINCES:
            raise ValueError("province must be a GB/T 2260 province code")
        if self.min_time_remaining < 0:
            raise ValueError("min_time_remaining must be >= 0")


# --------------------------------------------------------------------------- request validation


class _Renderer(Protocol):
    """:func:`issuer.render.render_png` (bytes) or :func:`~issuer.render.render_svg` (text)."""

    def __call__(self, text: str, *, scale: int = ..., border: int = ...) -> bytes | str: ...


@dataclass(frozen=True, slots=True)
class _NamedCode:
    """The code a request names: its ``ref``, and its ``text`` when named by text.

    A text's ref is read from its *unverified* fields, so the text goes to the
    domain with it, which finds the code only if the text is the one issued.
    """

    ref: CodeRef
    text: str | None = None


_DOCUMENT_TYPES: Mapping[int, DocumentType] = {
    common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{t.name}"): t for t in DocumentType
}
_REASONS: Mapping[common_pb2.RevocationReason, RevocationReason] = {
    common_pb2.RevocationReason.Value(f"REVOCATION_REASON_{r.name}"): r for r in RevocationReason
}
_REASON_VALUES: Mapping[RevocationReason, common_pb2.RevocationReason] = {r: v for v, r in _REASONS.items()}
_CLIENT_REASONS = frozenset(RevocationReason) - {RevocationReason.MERGED, RevocationReason.SUPERSEDED}
_STATE_VALUES: Mapping[CodeState, common_pb2.CodeState] = {
    s: common_pb2.CodeState.Value(f"CODE_STATE_{s.name}") for s in CodeState
}


def _document(msg: common_pb2.Document, present: bool, path: str, today: dt.date, out: Violations) -> Document | None:
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


def _main_index_id(value: str, path: str, out: Violations) -> str | None:
    if not value:
        out.add(path, "main index ID is required", "required")
        return None
    try:
        return parse_main_index_id(value)
    except InvalidClaims:
        out.add(path, "main index ID must be 26 Base32 characters (128 bits)", "format")
        return None


def _idempotency_key(value: str, out: Violations) -> str | None:
    if not value:
        return None
    if not IDEMPOTENCY_KEY.match(value):
        out.add("idempotency_key", "idempotency key must be 8 to 128 characters of A-Z a-z 0-9 . _ : -", "format")
        return None
    return value


def _dt(ts: dt.datetime) -> timestamp_pb2.Timestamp:
    if ts.tzinfo is None:
        raise ValueError("naive datetime from the domain")
    delta = ts - dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)
    return timestamp_pb2.Timestamp(seconds=delta.days * 86400 + delta.seconds, nanos=delta.microseconds * 1000)


def _code_ref_pb(ref: CodeRef) -> common_pb2.CodeRef:
    return common_pb2.CodeRef(province=ref.province, kid=ref.kid, serial=ref.serial)


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _set_timestamp(ts: timestamp_pb2.Timestamp, moment: dt.datetime) -> None:
    """:func:`_dt` written into an existing field (no message built and copied)."""
    if moment.tzinfo is None:
        raise ValueError("naive datetime from the domain")
    delta = moment - _EPOCH
    ts.seconds = delta.days * 86400 + delta.seconds
    ts.nanos = delta.microseconds * 1000


def _issued_code_pb(code: IssuedCode, now: dt.datetime,
                    into: common_pb2.IssuedCode | None = None) -> common_pb2.IssuedCode:
    """The wire form of ``code``, filled in place into ``into`` (a response's field) if given."""
    msg = common_pb2.IssuedCode() if into is None else into
    ref = code.ref
    msg.ref.province = ref.province
    msg.ref.kid = ref.kid
    msg.ref.serial = ref.serial
    msg.main_index_id = code.main_index_id
    msg.code_text = code.text
    _set_timestamp(msg.issued_at, code.issued_at)
    _set_timestamp(msg.expires_at, code.expires_at)
    msg.state = _STATE_VALUES[code.state(now)]
    if code.revoked_at is not None:
        _set_timestamp(msg.revoked_at, code.revoked_at)
    if code.revocation_reason is not None:
        msg.revocation_reason = _REASON_VALUES[RevocationReason(code.revocation_reason)]
    return msg


def _china_date(now: dt.datetime) -> dt.date:
    return now.astimezone(CHINA_STANDARD_TIME).date()


# --------------------------------------------------------------------------- the service


class IssuerService:
    """Both servicers over one domain, one clock and one set of in-flight domain tasks.

    ``clock`` returns an aware UTC ``datetime``; it is read once per RPC.
    ``on_issued`` is told of every code IssueCode or RenewCode returns
    (for metrics). :meth:`drain` waits for domain calls still running after
    their RPC ended, so the store is closed only when they are done.
    """

    def __init__(
        self,
        *,
        index: ResidentIndexPort,
        codes: CodeIssuerPort,
        settings: ServiceSettings,
        clock: Callable[[], dt.datetime],
        on_issued: Callable[[IssuedCode], None] | None = None,
        wallets: Any = None,
    ) -> None:
        self._index = index
        self._codes = codes
        self._settings = settings
        self._clock = clock
        self._on_issued = on_issued or (lambda code: None)
        self._inflight: set[asyncio.Future[Any]] = set()
        self._direct = 0  # cancel-safe domain calls being awaited directly (see _domain)
        self.resident_index = _ResidentIndexServicer(self)
        self.health_codes = _HealthCodesServicer(self)
        self.wallets = None
        if wallets is not None:  # issuer/wallets_service.py (a port of issuer.wallets.WalletIssuer)
            from issuer.wallets_service import WalletsServicer

            self.wallets = WalletsServicer(self, wallets)

    def add_to_server(self, server: grpc.aio.Server) -> list[str]:
        """Register the servicers (Wallets when given a domain); return their full service names."""
        resident_index_pb2_grpc.add_ResidentIndexServicer_to_server(self.resident_index, server)
        health_codes_pb2_grpc.add_HealthCodesServicer_to_server(self.health_codes, server)
        names = [
            resident_index_pb2.DESCRIPTOR.services_by_name["ResidentIndex"].full_name,
            health_codes_pb2.DESCRIPTOR.services_by_name["HealthCodes"].full_name,
        ]
        if self.wallets is not None:
            from issuer.wallets_service import add_to_server

            names.append(add_to_server(self.wallets, server))
        return names

    async def drain(self) -> None:
        """Wait for every domain call still running (their RPCs may have ended already)."""
        while self._inflight or self._direct:
            if self._inflight:
                await asyncio.gather(*list(self._inflight), return_exceptions=True)
            else:  # direct calls end with their RPCs (server.stop's grace has passed): a short wait
                await asyncio.sleep(0.01)

    # -- the steps every RPC takes -------------------------------------------------

    async def _serve(
        self,
        context: grpc.aio.ServicerContext,
        impl: Callable[[dt.datetime], Awaitable[T]],
    ) -> T:
        now = self._clock()  # (1) the one clock reading of this RPC
        try:
            self._check_time(context)  # (2) enough time left to start?
            return await impl(now)  # (3) validate, (4) call the domain
        except asyncio.CancelledError:
            raise
        except grpc.aio.AbortError:
            raise
        except Exception as error:  # (5) the one mapping
            if status_code_for(error) is grpc.StatusCode.INTERNAL:
                frames = traceback.extract_tb(error.__traceback__)
                where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
                # The type and place only: an unexpected error's text may quote data.
                log.error("internal error: %s at %s", type(error).__name__, where)
            await context.abort_with_status(_error_status(error))
            raise AssertionError("unreachable") from error  # abort_with_status raises

    def _check_time(self, context: grpc.aio.ServicerContext) -> None:
        remaining = context.time_remaining()
        if remaining is not None and remaining < self._settings.min_time_remaining:
            raise DeadlineExceeded("deadline too close to start the operation")

    async def _domain(self, context: grpc.aio.ServicerContext, call: Awaitable[T], *, cancel_safe: bool = False) -> T:
        """Start a domain call if time allows, and await it without ever cancelling it.

        ``cancel_safe`` declares that the call may be cancelled at any await
        without leaving work half-done (the issuing paths: what they submitted
        is committed or refused by the store on its own, see
        :mod:`issuer.issuance`). It is then awaited directly, saving a task and
        a shield per call on the hot path; :meth:`drain` still counts it.
        """
        try:
            self._check_time(context)
        except DeadlineExceeded:
            if asyncio.iscoroutine(call):
                call.close()  # never started: nothing half-done
            raise
        if cancel_safe:
            self._direct += 1
            try:
                return await call
            finally:
                self._direct -= 1
        task = asyncio.ensure_future(call)
        self._inflight.add(task)
        task.add_done_callback(self._finished)
        # When the deadline passes, gRPC cancels this RPC's task (the client has its
        # DEADLINE_EXCEEDED already); the shield keeps the cancellation off the domain call.
        return await asyncio.shield(task)

    def _finished(self, task: asyncio.Future[Any]) -> None:
        self._inflight.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: an RPC that gave up on it is not an unhandled error

    def _caller(self) -> str:
        return auth.current_caller()

    # -- shared conversions --------------------------------------------------------

    def _code_ref(self, msg: common_pb2.CodeRef, path: str, out: Violations) -> CodeRef | None:
        ok = True
        if not msg.province:
            out.add(f"{path}.province", "province is required", "required")
            ok = False
        elif msg.province not in PROVINCES:
            out.add(f"{path}.province", "province must be a two-digit GB/T 2260 code", "province")
            ok = False
        elif msg.province != self._settings.province:
            out.add(f"{path}.province", f"this issuer issues codes of province {self._settings.province} only",
                    "province")
            ok = False
        if not msg.kid:
            out.add(f"{path}.kid", "kid is required", "required")
            ok = False
        elif len(msg.kid) > MAX_KID_BYTES:
            out.add(f"{path}.kid", f"kid must be 1 to {MAX_KID_BYTES} bytes", "length")
            ok = False
        return CodeRef(province=msg.province, kid=bytes(msg.kid), serial=msg.serial) if ok else None

    def _code_text(self, text: str, path: str, out: Violations) -> _NamedCode | None:
        if not text:
            out.add(path, "code text is required", "required")
            return None
        if len(text) > MAX_TEXT_LENGTH:
            out.add(path, f"code text is longer than {MAX_TEXT_LENGTH} characters", "length")
            return None
        try:
            ref = self._codes.ref_from_text(text)
        except InvalidRequest as e:
            for v in e.violations:
                out.add(path, v.description, v.code)
            return None
        if ref.province != self._settings.province:
            out.add(path, f"this issuer issues codes of province {self._settings.province} only", "province")
            return None
        return _NamedCode(ref, text)

    def _which_code(self, request: Any, oneof: str, out: Violations) -> _NamedCode | None:
        which = request.WhichOneof(oneof)
        if which == "ref":
            ref = self._code_ref(request.ref, "ref", out)
            return None if ref is None else _NamedCode(ref)
        if which == "code_text":
            return self._code_text(request.code_text, "code_text", out)
        out.add(oneof, "one of ref or code_text is required", "required")
        return None

    def _get_code(self, code: _NamedCode) -> Awaitable[IssuedCode]:
        """The domain's read of the named code (by text: only if it is the text issued)."""
        if code.text is None:
            return self._codes.get_code(code.ref)
        return self._codes.get_code(code.ref, text=code.text)

    def _issued(self, code: IssuedCode) -> IssuedCode:
        try:
            self._on_issued(code)
        except Exception:  # metrics must never fail an issuance
            log.exception("on_issued hook failed")
        return code


class _ResidentIndexServicer(resident_index_pb2_grpc.ResidentIndexServicer):
    def __init__(self, service: IssuerService) -> None:
        self._s = service

    async def RegisterResident(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            today = _china_date(now)
            primary = _document(request.primary, request.HasField("primary"), "primary", today, out)
            if len(request.supplementary) > MAX_SUPPLEMENTARY:
                out.add("supplementary", f"at most {MAX_SUPPLEMENTARY} supplementary documents", "count")
                supplementary: list[Document | None] = []
            else:
                supplementary = [
                    _document(doc, True, f"supplementary[{i}]", today, out)
                    for i, doc in enumerate(request.supplementary)
                ]
            seen: dict[bytes, str] = {}
            for path, doc in [("primary", primary)] + [
                (f"supplementary[{i}]", d) for i, d in enumerate(supplementary)
            ]:
                if doc is None:
                    continue
                key = canonical_form(doc)
                if key in seen:
                    out.add(path, f"same document as {seen[key]}", "duplicate")
                else:
                    seen[key] = path
            out.raise_if_any()
            assert primary is not None
            main_index_id = await s._domain(
                context, s._index.register_resident(primary, [d for d in supplementary if d], now=now)
            )
            return resident_index_pb2.RegisterResidentResponse(main_index_id=main_index_id)

        return await s._serve(context, impl)

    async def LinkIdentifier(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            main_index_id = _main_index_id(request.main_index_id, "main_index_id", out)
            document = _document(request.document, request.HasField("document"), "document", _china_date(now), out)
            out.raise_if_any()
            await s._domain(context, s._index.link_identifier(main_index_id, document, now=now))
            return resident_index_pb2.LinkIdentifierResponse()

        return await s._serve(context, impl)

    async def FindResident(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            document = _document(request.document, request.HasField("document"), "document", _china_date(now), out)
            out.raise_if_any()
            main_index_id = await s._domain(context, s._index.find_resident(document))
            return resident_index_pb2.FindResidentResponse(main_index_id=main_index_id)

        return await s._serve(context, impl)

    async def MergeResidents(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            survivor = _main_index_id(request.survivor_main_index_id, "survivor_main_index_id", out)
            merged = _main_index_id(request.merged_main_index_id, "merged_main_index_id", out)
            if survivor is not None and survivor == merged:
                out.add("merged_main_index_id", "must differ from survivor_main_index_id", "same_resident")
            out.raise_if_any()
            revoked = await s._domain(context, s._index.merge_residents(survivor=survivor, merged=merged, now=now))
            return resident_index_pb2.MergeResidentsResponse(revoked_count=revoked)

        return await s._serve(context, impl)


class _HealthCodesServicer(health_codes_pb2_grpc.HealthCodesServicer):
    def __init__(self, service: IssuerService) -> None:
        self._s = service

    async def IssueCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            which = request.WhichOneof("resident")
            main_index_id = document = None
            if which == "main_index_id":
                main_index_id = _main_index_id(request.main_index_id, "main_index_id", out)
            elif which == "document":
                document = _document(request.document, True, "document", _china_date(now), out)
            else:
                out.add("resident", "one of main_index_id or document is required", "required")
            key = _idempotency_key(request.idempotency_key, out)
            out.raise_if_any()
            caller = s._caller()
            if document is not None:
                main_index_id = await s._domain(context, s._index.find_resident(document))
            code = await s._domain(
                context,
                s._codes.issue_code(caller=caller, main_index_id=main_index_id, idempotency_key=key, now=now,
                                    replace_live=True),  # one live static code per resident (issue 13)
                cancel_safe=True,
            )
            response = health_codes_pb2.IssueCodeResponse()
            _issued_code_pb(s._issued(code), now, response.code)
            return response

        return await s._serve(context, impl)

    async def RenewCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            named = s._which_code(request, "code", out)
            key = _idempotency_key(request.idempotency_key, out)
            out.raise_if_any()
            code = await s._domain(
                context, s._codes.renew_code(caller=s._caller(), ref=named.ref, idempotency_key=key, now=now,
                                             text=named.text),
                cancel_safe=True,
            )
            response = health_codes_pb2.RenewCodeResponse()
            _issued_code_pb(s._issued(code), now, response.code)
            return response

        return await s._serve(context, impl)

    async def RevokeCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            which = request.WhichOneof("target")
            named = main_index_id = None
            if which in ("ref", "code_text"):
                named = s._which_code(request, "target", out)
            elif which == "main_index_id":
                main_index_id = _main_index_id(request.main_index_id, "main_index_id", out)
            else:
                out.add("target", "one of ref, code_text or main_index_id is required", "required")
            reason = _REASONS.get(request.reason)
            if request.reason == common_pb2.REVOCATION_REASON_UNSPECIFIED:
                out.add("reason", "revocation reason is required", "required")
            elif reason is None:
                out.add("reason", "unknown revocation reason", "reason")
            elif reason not in _CLIENT_REASONS:
                out.add("reason", f"reason {reason.value} is set by the issuer only", "reason")
            out.raise_if_any()
            if main_index_id is not None:
                count = await s._domain(
                    context, s._codes.revoke_resident_codes(main_index_id=main_index_id, reason=reason, now=now)
                )
                return health_codes_pb2.RevokeCodeResponse(revoked_count=count)
            # The domain returns the code as stored, and a revoked code keeps its first
            # revocation: read it first to tell "revoked now" from "was revoked already".
            # (Two concurrent revocations of one code may both count 1.)
            # Named by text, both calls check it is the text issued: nothing is revoked otherwise.
            assert named is not None  # a ref or a code_text; without one a violation was raised above
            before = await s._domain(context, s._get_code(named))
            code = await s._domain(context, s._codes.revoke_code(ref=named.ref, reason=reason, now=now,
                                                                 text=named.text))
            fresh = before.revoked_at is None and code.revoked_at is not None
            return health_codes_pb2.RevokeCodeResponse(
                revoked_count=1 if fresh else 0, code=_issued_code_pb(code, now)
            )

        return await s._serve(context, impl)

    async def GetCodeStatus(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            out = Violations()
            named = s._which_code(request, "code", out)
            out.raise_if_any()
            code = await s._domain(context, s._get_code(named))
            return health_codes_pb2.GetCodeStatusResponse(code=_issued_code_pb(code, now))

        return await s._serve(context, impl)

    async def RenderCode(self, request, context):
        s = self._s

        async def impl(now: dt.datetime):
            from issuer import render  # qrcode is only needed here

            out = Violations()
            named = s._which_code(request, "code", out)
            fn: _Renderer | None
            content_type: str | None
            if request.format == health_codes_pb2.IMAGE_FORMAT_PNG:
                fn, content_type = render.render_png, "image/png"
            elif request.format == health_codes_pb2.IMAGE_FORMAT_SVG:
                fn, content_type = render.render_svg, "image/svg+xml"
            else:
                fn = content_type = None
                if request.format == health_codes_pb2.IMAGE_FORMAT_UNSPECIFIED:
                    out.add("format", "image format is required", "required")
                else:
                    out.add("format", "unknown image format", "format")
            scale = request.scale or DEFAULT_SCALE
            if not 1 <= scale <= MAX_SCALE:
                out.add("scale", f"scale must be 1 to {MAX_SCALE} pixels a module (0: default {DEFAULT_SCALE})",
                        "range")
            border = request.border if request.HasField("border") else DEFAULT_BORDER
            if not 0 <= border <= MAX_BORDER:
                out.add("border", f"border must be 0 to {MAX_BORDER} modules", "range")
            out.raise_if_any()
            assert fn is not None  # an unknown format is a violation raised above
            code = await s._domain(context, s._get_code(named))
            rendered: bytes | str = await asyncio.to_thread(fn, code.text, scale=scale, border=border)
            image = rendered.encode("utf-8") if isinstance(rendered, str) else rendered
            return health_codes_pb2.RenderCodeResponse(image=image, content_type=content_type)

        return await s._serve(context, impl)
