"""The wallet's calls to the issuer: enrol with proof of possession, renew, ask a credential's state.

:class:`WalletClient` is :class:`issuer.client.IssuerClient` (TLS, API key
and/or mTLS client certificate, bounded backoff on ``RESOURCE_EXHAUSTED``,
``UNAVAILABLE`` and ``DEADLINE_EXCEEDED``) with the ``Wallets`` stub added.
Its methods turn gRPC failures into the wallet's errors:

* still unreachable or overloaded after the retries: :class:`Offline` (the
  outcome is unknown, so the caller keeps its idempotency key);
* a renewal of a revoked credential: :class:`CredentialRevoked`, with the
  revocation reason the issuer reports;
* anything else the issuer refuses: :class:`IssuerRefused` with the status
  code and details (a definitive answer: nothing was minted).

Only calls that are safe to repeat are retried: ``CreateChallenge`` (a new
challenge each time), ``IssueCredential`` and ``RenewCode`` with an
idempotency key, ``GetCodeStatus``.
"""

from __future__ import annotations

import uuid

import grpc

from healthcode.algorithms import Algorithm
from issuer.api import common_pb2, health_codes_pb2, wallets_pb2
from issuer.client import IssuerClient, document_message
from issuer.documents import Document

from .errors import CredentialRevoked, IssuerRefused, Offline, WalletError

__all__ = ["WalletClient", "new_idempotency_key", "OFFLINE_CODES"]

_DEVICE_KEY_ALGORITHMS = {Algorithm.ES256: wallets_pb2.DEVICE_KEY_ALGORITHM_ES256,
                          Algorithm.SM2_SM3: wallets_pb2.DEVICE_KEY_ALGORITHM_SM2_SM3}

#: What says "the issuer cannot answer now", after the client's own retries.
OFFLINE_CODES = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                           grpc.StatusCode.RESOURCE_EXHAUSTED})

_REVOCATION_REASONS = {
    common_pb2.REVOCATION_REASON_LOST_DEVICE: "lost_device: the phone was reported lost",
    common_pb2.REVOCATION_REASON_DECEASED: "deceased",
    common_pb2.REVOCATION_REASON_FRAUD: "fraud",
    common_pb2.REVOCATION_REASON_MERGED: "merged: the resident's entries were merged",
    common_pb2.REVOCATION_REASON_SUPERSEDED: "superseded: a newer code or another device replaced it",
    common_pb2.REVOCATION_REASON_KEY_COMPROMISE: "key_compromise: the province's signing key is withdrawn",
    common_pb2.REVOCATION_REASON_OTHER: "other",
}


def new_idempotency_key() -> str:
    """A fresh idempotency key: ``wallet-`` and 32 hex digits (the API allows 8 to 128 of A-Z a-z 0-9 . _ : -)."""
    return f"wallet-{uuid.uuid4().hex}"


def _status(error: grpc.RpcError) -> tuple[grpc.StatusCode | None, str]:
    code = error.code() if callable(getattr(error, "code", None)) else None
    details = error.details() if callable(getattr(error, "details", None)) else None
    return code, details or "no details"


def _wallet_error(error: grpc.RpcError, doing: str) -> WalletError:
    code, details = _status(error)
    name = code.name if code is not None else "UNKNOWN"
    if code in OFFLINE_CODES:
        return Offline(f"cannot {doing}: the issuer cannot be reached now ({name}: {details}); try again later")
    return IssuerRefused(f"cannot {doing}: the issuer refused ({name}: {details})")


class WalletClient(IssuerClient):
    """:class:`~issuer.client.IssuerClient` (which carries the ``Wallets`` stub) with the wallet's calls
    and its errors. Use as a context manager."""

    def create_challenge(self, document: Document) -> bytes:
        """A fresh single-use challenge (32 bytes) for the resident holding ``document``."""
        request = wallets_pb2.CreateChallengeRequest(document=document_message(document))
        try:
            return bytes(self._call(self.wallets.CreateChallenge, request).challenge)
        except grpc.RpcError as error:
            raise _wallet_error(error, "start the enrolment") from None

    def issue_credential(self, document: Document, *, challenge: bytes, public_point: bytes, proof: bytes,
                         idempotency_key: str, algorithm: Algorithm = Algorithm.ES256) -> common_pb2.IssuedCode:
        """The credential bound to ``public_point`` (an ``algorithm`` key: ES256 or SM2-SM3), after the
        issuer checks ``proof`` over ``challenge``."""
        request = wallets_pb2.IssueCredentialRequest(
            document=document_message(document), challenge=challenge,
            device_key=wallets_pb2.DeviceKey(algorithm=_DEVICE_KEY_ALGORITHMS[Algorithm(algorithm)],
                                             public_key=public_point),
            proof=proof, idempotency_key=idempotency_key)
        try:
            return self._call(self.wallets.IssueCredential, request).credential
        except grpc.RpcError as error:
            raise _wallet_error(error, "enrol") from None

    def renew_credential(self, code_text: str, *, idempotency_key: str) -> common_pb2.IssuedCode:
        """A new credential for the same resident and device; the old one is revoked as superseded.

        A refusal because the credential is revoked (or unknown) is checked
        with ``GetCodeStatus`` and raised as :class:`CredentialRevoked`.
        """
        request = health_codes_pb2.RenewCodeRequest(code_text=code_text, idempotency_key=idempotency_key)
        try:
            return self._call(self.codes.RenewCode, request).code
        except grpc.RpcError as error:
            code, _ = _status(error)
            if code in (grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.NOT_FOUND):
                revoked = self._revocation(code_text)
                if revoked is not None:
                    raise CredentialRevoked(f"the credential was revoked ({revoked}): enrol this phone again") \
                        from None
            raise _wallet_error(error, "renew the credential") from None

    def _revocation(self, code_text: str) -> str | None:
        """The revocation reason of ``code_text`` if the issuer says it is revoked, else None."""
        try:
            issued = self.status(code_text)
        except grpc.RpcError:
            return None
        if issued.state != common_pb2.CODE_STATE_REVOKED:
            return None
        return _REVOCATION_REASONS.get(issued.revocation_reason, "unspecified")
