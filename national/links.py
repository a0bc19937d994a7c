"""The national service's calls into the provinces: ``healthcode.issuer.v1.NationalLink`` over mTLS.

One ``grpc.aio`` channel per province, opened on first use, authenticated
with the national client certificate (CN ``national:<name>``) and trusting
the provinces' server CA, reconnecting at most 5 s apart after a province
restarts (:data:`RECONNECT_OPTIONS`). A province that cannot be reached, or does not
answer within ``timeout`` seconds, is :class:`~national.errors.ProvinceUnavailable`;
any other refusal is :class:`ProvinceRefused` carrying the province's status
code (passed on to the caller) and its message (provinces' messages carry no
numbers, by their contract).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Mapping

import grpc

from issuer.api import common_pb2, national_link_pb2, national_link_pb2_grpc
from issuer.documents import Document, DocumentType, parse_document

from .errors import NationalError, ProvinceUnavailable

__all__ = ["ProvinceLinks", "LinkTls", "ProvinceRefused", "PatientAnswer"]

_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED,
                grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL}
#: Reconnect soon after a province restarts: gRPC's default backoff (1 s, x1.6 per failed attempt) grows to
#: 120 s, and every transfer and resolution for that province is UNAVAILABLE until the channel reconnects.
#: With these, the gap between attempts stays at most 5 s (+-20 % jitter), as issuer/national_client.py's.
RECONNECT_OPTIONS: tuple[tuple[str, int], ...] = (("grpc.initial_reconnect_backoff_ms", 1000),
                                                  ("grpc.max_reconnect_backoff_ms", 5000))
_DOCUMENT_TYPES = {common_pb2.DocumentType.Value(f"DOCUMENT_TYPE_{t.name}"): t for t in DocumentType}


class ProvinceRefused(NationalError):
    """The province answered with an error; ``code`` is its gRPC status code (passed on)."""

    reason = "province_refused"

    def __init__(self, province: str, code: grpc.StatusCode, details: str) -> None:
        super().__init__(f"province {province}: {details or code.name.lower()}")
        self.code = code


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
            raise ProvinceRefused(province, e.code(), e.details() or "") from None

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
                                  "the province answered with a malformed primary document") from None
        resolved_at = response.resolved_at.ToDatetime(tzinfo=dt.timezone.utc)
        return PatientAnswer(response.main_index_id, primary, response.access_id, resolved_at)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
