"""A small synchronous client of the issuer API, for tools (demo, batch-issue, reprint).

Apps use the generated stubs in :mod:`issuer.api` directly (``docs/api.md``);
this wraps the few calls the tools need, with TLS, an API key and/or an mTLS
client certificate, and the retry policy ``docs/api.md`` recommends:

* ``RESOURCE_EXHAUSTED`` (rate limit, concurrency cap), ``UNAVAILABLE`` and
  ``DEADLINE_EXCEEDED`` are retried with exponential backoff and full jitter
  (:class:`Backoff`), at least as long as a ``google.rpc.RetryInfo`` hint in the
  error's details asks, bounded by a number of attempts and a time budget; the
  last error is raised when either runs out.
* Only calls that are safe to repeat go through it: reads, ``RegisterResident``
  (a repeat is ALREADY_EXISTS, which :meth:`IssuerClient.find_or_register`
  resolves), and ``IssueCode`` / ``RevokeCode`` with the same idempotency key or
  target, so a retry never gives a resident a second code.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Self

import grpc

from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc
from issuer.api import resident_index_pb2, resident_index_pb2_grpc, wallets_pb2, wallets_pb2_grpc
from issuer.documents import Document, DocumentType

__all__ = ["IssuerClient", "Backoff", "RETRYABLE", "document_message", "retry_hint"]

_DOCUMENT_TYPES = {
    DocumentType.RESIDENT_ID: common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
    DocumentType.RESIDENCE_PERMIT_HMT: common_pb2.DOCUMENT_TYPE_RESIDENCE_PERMIT_HMT,
    DocumentType.PERMANENT_RESIDENCE_ID: common_pb2.DOCUMENT_TYPE_PERMANENT_RESIDENCE_ID,
    DocumentType.TRAVEL_PERMIT_HK_MO: common_pb2.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO,
    DocumentType.TRAVEL_PERMIT_TW: common_pb2.DOCUMENT_TYPE_TRAVEL_PERMIT_TW,
    DocumentType.PASSPORT: common_pb2.DOCUMENT_TYPE_PASSPORT,
}

#: Status codes that say "try again later", never "this request is wrong".
RETRYABLE = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                       grpc.StatusCode.DEADLINE_EXCEEDED})


def document_message(document: Document) -> common_pb2.Document:
    return common_pb2.Document(
        type=_DOCUMENT_TYPES[document.type], number=document.number, country=document.country or ""
    )


@dataclass(frozen=True)
class Backoff:
    """Exponential backoff with full jitter: attempt *n* (0-based) waits ``U(0, min(cap, base * 2**n))``.

    ``attempts`` bounds the tries of one call (the first included) and
    ``budget`` the seconds spent waiting for it; a server hint (RetryInfo) is a
    floor for the wait, never a reason to exceed the budget.
    """

    attempts: int = 10
    base: float = 0.05
    cap: float = 5.0
    budget: float = 60.0

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base <= 0 or self.cap < self.base or self.budget < 0:
            raise ValueError("backoff needs attempts >= 1, 0 < base <= cap and budget >= 0")

    def delay(self, attempt: int, rng: random.Random, *, hint: float | None = None) -> float:
        """The wait before retry number ``attempt + 1``."""
        wait = rng.uniform(0.0, min(self.cap, self.base * 2 ** min(attempt, 30)))
        return max(wait, hint) if hint is not None else wait


def retry_hint(error: grpc.RpcError) -> float | None:
    """Seconds a ``google.rpc.RetryInfo`` in the error's rich details asks to wait, if any."""
    try:
        from google.rpc import error_details_pb2
        from grpc_status import rpc_status

        status = rpc_status.from_call(error)
    except Exception:  # no details, not a call, or a mismatching trailer
        return None
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            info = error_details_pb2.RetryInfo()
            detail.Unpack(info)
            return max(0.0, info.retry_delay.seconds + info.retry_delay.nanos / 1e9)
    return None


@dataclass
class _RetryState:
    retries: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


class IssuerClient:
    """TLS channel + credentials + stubs + bounded retries. Use as a context manager.

    Credentials: an API key (``authorization: Bearer``), an mTLS client
    certificate (``cert_pem``/``key_pem``; required by an issuer with a client
    CA), or both (the server then judges the call by the key).
    """

    def __init__(self, address: str, *, ca_pem: bytes, api_key: str | None = None,
                 cert_pem: bytes | None = None, key_pem: bytes | None = None, timeout: float = 10.0,
                 backoff: Backoff = Backoff(), sleep: Callable[[float], None] = time.sleep,
                 rng: random.Random | None = None) -> None:
        if (cert_pem is None) != (key_pem is None):
            raise ValueError("a client certificate needs both its certificate and its private key")
        if api_key is None and cert_pem is None:
            raise ValueError("the issuer needs credentials: an API key, a client certificate, or both")
        credentials = grpc.ssl_channel_credentials(root_certificates=ca_pem, private_key=key_pem,
                                                   certificate_chain=cert_pem)
        self._channel = grpc.secure_channel(address, credentials)
        self._metadata = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        self._timeout = timeout
        self._backoff = backoff
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._state = _RetryState()
        self.index = resident_index_pb2_grpc.ResidentIndexStub(self._channel)
        self.codes = health_codes_pb2_grpc.HealthCodesStub(self._channel)
        self.wallets = wallets_pb2_grpc.WalletsStub(self._channel)

    @property
    def retries(self) -> int:
        """Calls retried so far (after RESOURCE_EXHAUSTED, UNAVAILABLE or DEADLINE_EXCEEDED)."""
        return self._state.retries

    @property
    def retries_by_code(self) -> dict[str, int]:
        """Retries so far by the status code that caused them."""
        return dict(self._state.by_code)

    def _call(self, method: Callable[..., Any], request: Any) -> Any:
        """One RPC, retried as the module docstring says; the caller vouches that repeating it is safe."""
        started = time.monotonic()
        attempt = 0
        while True:
            try:
                return method(request, metadata=self._metadata, timeout=self._timeout)
            except grpc.RpcError as error:
                code = error.code() if callable(getattr(error, "code", None)) else None
                if code is None or code not in RETRYABLE or attempt + 1 >= self._backoff.attempts:
                    raise
                wait = self._backoff.delay(attempt, self._rng, hint=retry_hint(error))
                if time.monotonic() - started + wait > self._backoff.budget:
                    raise
                self._state.retries += 1
                self._state.by_code[code.name] = self._state.by_code.get(code.name, 0) + 1
                self._sleep(wait)
                attempt += 1

    def find(self, document: Document) -> str:
        """The main index ID of the resident holding ``document`` (NOT_FOUND raises)."""
        return self._call(self.index.FindResident,
                          resident_index_pb2.FindResidentRequest(document=document_message(document))).main_index_id

    def find_or_register(self, document: Document) -> str:
        """The main index ID of the resident holding ``document``, registering them if new."""
        message = document_message(document)
        try:
            return self.find(document)
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        try:
            return self._call(self.index.RegisterResident,
                              resident_index_pb2.RegisterResidentRequest(primary=message)).main_index_id
        except grpc.RpcError as error:  # registered by a concurrent run (or our own retried attempt) in between
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return self.find(document)

    def issue(self, main_index_id: str, *, idempotency_key: str) -> common_pb2.IssuedCode:
        request = health_codes_pb2.IssueCodeRequest(main_index_id=main_index_id, idempotency_key=idempotency_key)
        return self._call(self.codes.IssueCode, request).code

    def revoke(self, ref: common_pb2.CodeRef, *, reason: common_pb2.RevocationReason) -> int:
        """Revoke one code; returns 1, or 0 when it was revoked already (a retry is harmless)."""
        request = health_codes_pb2.RevokeCodeRequest(ref=ref, reason=reason)
        return self._call(self.codes.RevokeCode, request).revoked_count

    def live_codes(self, main_index_id: str) -> list[wallets_pb2.LiveCode]:
        """A resident's live codes with their channel (phone credential or static), newest first."""
        request = wallets_pb2.ListLiveCodesRequest(main_index_id=main_index_id)
        return list(self._call(self.wallets.ListLiveCodes, request).codes)

    def render_png(self, ref: common_pb2.CodeRef, *, scale: int = 6) -> bytes:
        request = health_codes_pb2.RenderCodeRequest(ref=ref, format=health_codes_pb2.IMAGE_FORMAT_PNG, scale=scale)
        return self._call(self.codes.RenderCode, request).image

    def status(self, code_text: str) -> common_pb2.IssuedCode:
        return self._call(self.codes.GetCodeStatus, health_codes_pb2.GetCodeStatusRequest(code_text=code_text)).code

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
