"""The steps every issuer RPC takes, shared by the servicers: wire requests in, domain calls, wire responses out.

The servicers are :mod:`issuer.resident_service` (ResidentIndex), :mod:`issuer.codes_service`
(HealthCodes) and :mod:`issuer.wallets_service` (Wallets); the request-field parsers, the wire
conversions and the error table are :mod:`issuer.wire`.

Each RPC runs the same steps, marked in :meth:`IssuerService._serve`:

1. read the clock once (``now``), passed down to every domain call;
2. refuse at once with DEADLINE_EXCEEDED if the remaining time is too short;
3. validate *every* request field and convert it to domain types (documents
   through :func:`issuer.wire.document_field`); all violations are
   collected and answered together as INVALID_ARGUMENT with a
   ``google.rpc.BadRequest`` detail whose field paths name request fields
   (``primary.number``, ``supplementary[2].country``, ``ref.kid``);
4. call the domain. The domain call runs as its own task, shielded from the
   RPC: if the deadline passes (or the client goes away) while it awaits the
   store, gRPC cancels the RPC (the client sees DEADLINE_EXCEEDED or
   CANCELLED) but the call still finishes, so a durable commit is never cut
   in half and an idempotent retry returns the same code;
5. map a domain error to a status code with :data:`issuer.wire.STATUS_BY_ERROR`, the one
   table; anything unexpected becomes INTERNAL with no detail.

Wire types never leave the servicer modules: the domain sees :class:`Document`,
:class:`CodeRef`, :class:`RevocationReason`, and returns :class:`IssuedCode`.
Status messages and logs never carry document numbers, main index IDs or code
texts.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import traceback
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Protocol, Sequence, TypeVar

import grpc

from healthcode import PROVINCES, MainIndexId
from healthcode.codec import MAX_TEXT_LENGTH
from issuer import auth
from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc, resident_index_pb2, resident_index_pb2_grpc
from issuer.documents import Document
from issuer.errors import InvalidRequest, Violations
from issuer.model import CodeRef, IdempotencyKey, IssuedCode, RevocationReason
from issuer.wire import DeadlineExceeded, error_status, status_code_for

__all__ = [
    "ResidentIndexPort",
    "CodeIssuerPort",
    "ServiceSettings",
    "IssuerService",
    "NamedCode",
]

log = logging.getLogger("issuer.service")

MAX_KID_BYTES = 32

T = TypeVar("T")


# --------------------------------------------------------------------------- the domain's seams


class ResidentIndexPort(Protocol):
    """What the servicer needs of the resident main index (``issuer.index.ResidentIndex``)."""

    async def register_resident(
        self, primary: Document, supplementary: Sequence[Document] = (), *, now: dt.datetime
    ) -> MainIndexId: ...

    async def link_identifier(self, main_index_id: MainIndexId, document: Document, *, now: dt.datetime) -> None: ...

    async def find_resident(self, document: Document) -> MainIndexId: ...

    async def merge_residents(self, *, survivor: MainIndexId, merged: MainIndexId, now: dt.datetime) -> int: ...

    # issue 14: the API's answers with the national index (issuer.index.ResidentIndex has them all)

    async def register(self, primary: Document, supplementary: Sequence[Document] = (), *,
                       now: dt.datetime) -> Any: ...  # issuer.index.Registration

    async def find(self, document: Document) -> Any: ...  # issuer.index.Found

    async def list_accesses(self, main_index_id: MainIndexId, *, page_size: int,
                            page_token: str) -> Any: ...  # issuer.index.AccessPage

    async def move_in(self, main_index_id: MainIndexId, document: Document, supplementary: Sequence[Document],
                      consent: Any, *, now: dt.datetime) -> tuple[MainIndexId, str]: ...


class CodeIssuerPort(Protocol):
    """What the servicer needs of issuance (``issuer.issuance.CodeIssuer``)."""

    async def issue_code(
        self, *, caller: str, main_index_id: MainIndexId, idempotency_key: IdempotencyKey | None, now: dt.datetime,
        replace_live: bool = False,
    ) -> IssuedCode: ...

    # ``text``: the request named the code by its text, whose fields are unverified; the
    # domain finds the code only if ``text`` is exactly the one issued (else NotFound).

    async def renew_code(
        self, *, caller: str, ref: CodeRef, idempotency_key: IdempotencyKey | None, now: dt.datetime,
        text: str | None = None
    ) -> IssuedCode: ...

    async def revoke_code(
        self, *, ref: CodeRef, reason: RevocationReason, now: dt.datetime, text: str | None = None
    ) -> IssuedCode: ...

    async def revoke_resident_codes(self, *, main_index_id: MainIndexId, reason: RevocationReason,
                                    now: dt.datetime) -> int: ...

    async def get_code(self, ref: CodeRef, *, text: str | None = None) -> IssuedCode: ...

    def ref_from_text(self, text: str) -> CodeRef: ...


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


@dataclass(frozen=True, slots=True)
class NamedCode:
    """The code a request names: its ``ref``, and its ``text`` when named by text.

    A text's ref is read from its *unverified* fields, so the text goes to the
    domain with it, which finds the code only if the text is the one issued.
    """

    ref: CodeRef
    text: str | None = None


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
        from issuer.codes_service import HealthCodesServicer
        from issuer.resident_service import ResidentIndexServicer

        self.resident_index = ResidentIndexServicer(self)
        self.health_codes = HealthCodesServicer(self)
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
            await context.abort_with_status(error_status(error))
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

    def _code_text(self, text: str, path: str, out: Violations) -> NamedCode | None:
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
        return NamedCode(ref, text)

    def _which_code(self, request: Any, oneof: str, out: Violations) -> NamedCode | None:
        which = request.WhichOneof(oneof)
        if which == "ref":
            ref = self._code_ref(request.ref, "ref", out)
            return None if ref is None else NamedCode(ref)
        if which == "code_text":
            return self._code_text(request.code_text, "code_text", out)
        out.add(oneof, "one of ref or code_text is required", "required")
        return None

    def _get_code(self, code: NamedCode) -> Awaitable[IssuedCode]:
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
