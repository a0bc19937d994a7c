"""The national service's calls into the provinces: ``healthcode.issuer.v1.NationalLink`` over mTLS.

One ``grpc.aio`` channel per province, opened on first use, authenticated
with the national client certificate (CN ``national:<name>``) and trusting
the provinces' server CA, reconnecting at most 5 s apart after a province
restarts (:data:`RECONNECT_OPTIONS`). A province that cannot be reached, or does not
answer within ``timeout`` seconds, is :class:`~national.errors.ProvinceUnavailable`;
any other refusal is :class:`ProvinceRefused` carrying the province's status
code (passed on to the caller) and its stable ErrorInfo reason when that is
one hospitals may get (:data:`REFUSAL_MESSAGES`), else ``PROVINCE_REFUSED``.
The message a hospital reads is built from that reason alone: a province's own
message is never passed on (it may say why a code was revoked: lost device,
deceased, fraud, which no hospital needs).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

import grpc

from issuer.api import common_pb2, national_link_pb2, national_link_pb2_grpc
from issuer.documents import Document, DocumentType, parse_document
from issuer.wire import ERROR_DOMAIN as PROVINCE_ERROR_DOMAIN
from issuer.wire import received_error_info

from .errors import NationalError, ProvinceUnavailable

__all__ = ["ProvinceLinks", "LinkTls", "ProvinceRefused", "PatientAnswer", "REFUSAL_MESSAGES", "RECONNECT_OPTIONS"]

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
#: Reconnect soon after a province restarts: gRPC's default backoff (1 s, x1.6 per failed attempt) grows to
#: 120 s, and every transfer and resolution for that province is UNAVAILABLE until the channel reconnects.
#: With these, the gap between attempts stays at most 5 s (+-20 % jitter), as issuer/national_client.py's.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.initial_reconnect_backoff_ms", 1000),
                                                  ("grpc.max_reconnect_backoff_ms", 5000))
_DOCUMENT_TYPES = {common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{t.name}"): t for t in DocumentType}


_CURRENT = ("请出示当前健康码", "ask for the current code")
_AGAIN = ("请本人重新出示", "ask the person to show it again")
_INVALID = ("发码省份认定此码无效", "the home province found this code not valid")
_REFUSALS: Mapping[str, tuple[str, str]] = {
    "REVOKED": ("此码已被发码省份作废，" + _CURRENT[0], "the home province revoked this code: " + _CURRENT[1]),
    "SUPERSEDED": ("此码已被新码取代，" + _CURRENT[0], "this code was replaced by a newer one: " + _CURRENT[1]),
    "MOVED": ("居民已迁往他省，" + _CURRENT[0], "the resident moved to another province: " + _CURRENT[1]),
    "EXPIRED": ("此码已过期，" + _CURRENT[0], "this code has expired: " + _CURRENT[1]),
    "NOT_YET_VALID": ("此码尚未生效", "this code is not valid yet"),
    "KEY_COMPROMISED": ("此码的签发密钥已停用，" + _CURRENT[0], "its signing key was withdrawn: " + _CURRENT[1]),
    "REPLAYED": ("此动态码已查询过，" + _AGAIN[0], "this live code was resolved already: " + _AGAIN[1]),
    "STALE_PRESENTATION": ("此动态码已过时，" + _AGAIN[0], "this live code is too old: " + _AGAIN[1]),
    "FUTURE_PRESENTATION": ("此动态码时间有误，" + _AGAIN[0], "this live code's time is wrong: " + _AGAIN[1]),
    "PRESENTATION_REQUIRED": ("此码绑定手机，请扫描手机上的动态码",
                              "this code is bound to a phone: scan the live code the phone shows"),
    "UNKNOWN_CODE": ("发码省份没有此码的记录", "the home province has no record of this code"),
    "OTHER_PROVINCE": ("此码不是该省份签发的", "the province asked did not issue this code"),
    "BAD_SIGNATURE": _INVALID,
    "UNKNOWN_KEY": _INVALID,
    "NOT_FOUND": ("发码省份查无此居民", "the home province has no such resident"),
    "PROVINCE_REFUSED": ("发码省份拒绝查询此码", "the home province refused to resolve this code"),
}
#: The home province's refusal reasons (ErrorInfo, upper case) a hospital gets as they are, and what it reads
#: for each (Chinese / English). Any other reason, or none, is ``PROVINCE_REFUSED`` with its message.
REFUSAL_MESSAGES: Mapping[str, str] = {reason: f"{zh} / {en}" for reason, (zh, en) in _REFUSALS.items()}


class ProvinceRefused(NationalError):
    """The province answered with an error; ``code`` is its gRPC status code (passed on).

    ``reason`` is the province's own when :data:`REFUSAL_MESSAGES` lists it, else
    ``province_refused``; the message is that reason's, or ``message`` (one the
    national service wrote itself, never a province's).
    """

    reason = "province_refused"

    def __init__(self, province: str, code: grpc.StatusCode, province_reason: str = "", *, message: str = "") -> None:
        reason = province_reason.upper() if province_reason.upper() in REFUSAL_MESSAGES else "PROVINCE_REFUSED"
        super().__init__(message or REFUSAL_MESSAGES[reason])
        self.code = code
        self.province = province
        self.reason = reason.lower()


@dataclass(frozen=True)
class LinkTls:
    """The national client certificate and key (PEM), and the CA the provinces' server certificates chain to."""

    root_ca_pem: bytes
    cert_pem: bytes
    key_pem: bytes = field(repr=False)
    server_name_override: str | None = None  # for test PKIs whose server certificates name 127.0.0.1 only


@dataclass(frozen=True)
class PatientAnswer:
    main_index_id: str
    primary_document: Document
    access_id: str
    resolved_at: dt.datetime


class ProvinceLinks:
    """Clients of every province's NationalLink. ``endpoints``: province code -> ``host:port``."""

    def __init__(self, endpoints: Mapping[str, str], tls: LinkTls, *, timeout: float = 5.0) -> None:
        self._endpoints = dict(endpoints)
        self._tls = tls
        self._timeout = timeout
        self._channels: dict[str, Any] = {}
        self._credentials = grpc.ssl_channel_credentials(tls.root_ca_pem, tls.key_pem, tls.cert_pem)

    def _stub(self, province: str) -> national_link_pb2_grpc.NationalLinkStub:
        channel = self._channels.get(province)
        if channel is None:
            target = self._endpoints.get(province)
            if target is None:
                raise ProvinceUnavailable(f"no NationalLink endpoint is configured for province {province}",
                                          province)
            options: list[tuple[str, Any]] = list(RECONNECT_OPTIONS)
            if self._tls.server_name_override:
                options.append(("grpc.ssl_target_name_override", self._tls.server_name_override))
            channel = self._channels[province] = grpc.aio.secure_channel(target, self._credentials, options=options)
        return national_link_pb2_grpc.NationalLinkStub(channel)

    async def _call(self, province: str, method: str, request: Any) -> Any:
        stub = self._stub(province)
        try:
            return await getattr(stub, method)(request, timeout=self._timeout)
        except grpc.aio.AioRpcError as e:
            if e.code() in _UNREACHABLE:
                raise ProvinceUnavailable(f"province {province} did not answer ({e.code().name}); "
                                          "nothing was changed", province) from None
            info = received_error_info(e)  # the province's stable reason; its message stays here
            reason = info.reason if info is not None and info.domain == PROVINCE_ERROR_DOMAIN else ""
            raise ProvinceRefused(province, e.code(), reason) from None

    async def release_resident(self, province: str, main_index_id: str, *, to_province: str,
                               consent_reference: str) -> int:
        """``NationalLink.ReleaseResident`` at ``province``; the number of codes it superseded."""
        response = await self._call(province, "ReleaseResident", national_link_pb2.ReleaseResidentRequest(
            main_index_id=main_index_id, to_province=to_province, consent_reference=consent_reference))
        return int(response.superseded_codes)

    async def resolve_patient(self, province: str, *, code: str, purpose: int, organisation: str,
                              hospital_province: str, today: dt.date) -> PatientAnswer:
        """``NationalLink.ResolvePatient`` at ``province`` (the code's verified home)."""
        response = await self._call(province, "ResolvePatient", national_link_pb2.ResolvePatientRequest(
            code=code, purpose=purpose,
            hospital=national_link_pb2.Hospital(organisation=organisation, province=hospital_province)))
        doc = response.primary_document
        doc_type = _DOCUMENT_TYPES.get(doc.type)
        try:
            if doc_type is None:
                raise ValueError("document type")
            primary = parse_document(doc_type, doc.number, country=doc.country or None, today=today)
        except ValueError:
            raise ProvinceRefused(province, grpc.StatusCode.INTERNAL,
                                  message=f"province {province} answered with a malformed primary document") from None
        resolved_at = response.resolved_at.ToDatetime(tzinfo=dt.timezone.utc)
        return PatientAnswer(response.main_index_id, primary, response.access_id, resolved_at)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
