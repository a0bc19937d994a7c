"""A small synchronous client of the issuer API, for tools (demo, batch-issue).

Apps use the generated stubs in :mod:`issuer.api` directly (``docs/api.md``);
this wraps the few calls the tools need, with TLS and an API key.
"""

from __future__ import annotations

import grpc

from issuer.api import common_pb2, health_codes_pb2, health_codes_pb2_grpc
from issuer.api import resident_index_pb2, resident_index_pb2_grpc
from issuer.documents import Document, DocumentType

__all__ = ["IssuerClient", "document_message"]

_DOCUMENT_TYPES = {
    DocumentType.RESIDENT_ID: common_pb2.DOCUMENT_TYPE_RESIDENT_ID,
    DocumentType.RESIDENCE_PERMIT_HMT: common_pb2.DOCUMENT_TYPE_RESIDENCE_PERMIT_HMT,
    DocumentType.PERMANENT_RESIDENCE_ID: common_pb2.DOCUMENT_TYPE_PERMANENT_RESIDENCE_ID,
    DocumentType.TRAVEL_PERMIT_HK_MO: common_pb2.DOCUMENT_TYPE_TRAVEL_PERMIT_HK_MO,
    DocumentType.TRAVEL_PERMIT_TW: common_pb2.DOCUMENT_TYPE_TRAVEL_PERMIT_TW,
    DocumentType.PASSPORT: common_pb2.DOCUMENT_TYPE_PASSPORT,
}


def document_message(document: Document) -> common_pb2.Document:
    return common_pb2.Document(
        type=_DOCUMENT_TYPES[document.type], number=document.number, country=document.country or ""
    )


class IssuerClient:
    """TLS channel + API key + stubs. Use as a context manager."""

    def __init__(self, address: str, *, ca_pem: bytes, api_key: str, timeout: float = 10.0) -> None:
        self._channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=ca_pem))
        self._metadata = (("authorization", f"Bearer {api_key}"),)
        self._timeout = timeout
        self.index = resident_index_pb2_grpc.ResidentIndexStub(self._channel)
        self.codes = health_codes_pb2_grpc.HealthCodesStub(self._channel)

    def _call(self, method, request):
        return method(request, metadata=self._metadata, timeout=self._timeout)

    def find_or_register(self, document: Document) -> str:
        """The main index ID of the resident holding ``document``, registering them if new."""
        message = document_message(document)
        try:
            return self._call(self.index.FindResident,
                              resident_index_pb2.FindResidentRequest(document=message)).main_index_id
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        try:
            return self._call(self.index.RegisterResident,
                              resident_index_pb2.RegisterResidentRequest(primary=message)).main_index_id
        except grpc.RpcError as error:  # registered by a concurrent run in between
            if error.code() != grpc.StatusCode.ALREADY_EXISTS:
                raise
            return self._call(self.index.FindResident,
                              resident_index_pb2.FindResidentRequest(document=message)).main_index_id

    def issue(self, main_index_id: str, *, idempotency_key: str) -> common_pb2.IssuedCode:
        request = health_codes_pb2.IssueCodeRequest(main_index_id=main_index_id, idempotency_key=idempotency_key)
        return self._call(self.codes.IssueCode, request).code

    def render_png(self, ref: common_pb2.CodeRef, *, scale: int = 6) -> bytes:
        request = health_codes_pb2.RenderCodeRequest(ref=ref, format=health_codes_pb2.IMAGE_FORMAT_PNG, scale=scale)
        return self._call(self.codes.RenderCode, request).image

    def status(self, code_text: str) -> common_pb2.IssuedCode:
        return self._call(self.codes.GetCodeStatus, health_codes_pb2.GetCodeStatusRequest(code_text=code_text)).code

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "IssuerClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
