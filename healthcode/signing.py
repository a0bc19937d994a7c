"""Signing a code: the one place a health code's signature is made.

:func:`sign_code` turns :class:`~healthcode.model.CodeClaims` into the code's
text with any :class:`~healthcode.codec.Signer`. :class:`SoftwareSigner` wraps
an in-memory :class:`~healthcode.algorithms.SigningKey`; ``keys/`` provides
signers for key files and PKCS#11 HSMs behind the same interface.
"""

from __future__ import annotations

from .algorithms import Algorithm, SigningKey, VerificationKey
from .codec import Signer, encode_code
from .errors import InvalidKey
from .model import CodeClaims

__all__ = ["Signer", "SoftwareSigner", "sign_code"]


class SoftwareSigner(Signer):
    """A :class:`Signer` over an in-memory signing key; ``kid`` defaults to the key's id."""

    def __init__(self, key: SigningKey, *, kid: bytes | None = None) -> None:
        self._key = key
        self.algorithm: Algorithm = key.algorithm
        self.kid = key.public_key().key_id() if kid is None else bytes(kid)
        if not 1 <= len(self.kid) <= 32:
            raise InvalidKey("kid must be 1 to 32 bytes")

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key(self) -> VerificationKey:
        return self._key.public_key()

    def __repr__(self) -> str:
        return f"<SoftwareSigner {self.algorithm.value} kid={self.kid.hex()}>"


def sign_code(claims: CodeClaims, signer: Signer) -> str:
    """Sign ``claims``; return the code's text (``EHC1:`` + Base45)."""
    return encode_code(claims, signer)
