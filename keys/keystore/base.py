"""The one keystore interface: where a province's private keys live is the keystore's business.

A :class:`Keystore` creates keys, hands out :class:`healthcode.Signer` objects
for them, and names them by :class:`KeyHandle`. The issuer and the lifecycle
hold handles, never key material. Two implementations:

* :class:`~keys.keystore.files.FileKeystore`: encrypted PKCS#8 files
  (scrypt, AES-256-CBC), ES256, EdDSA and SM2;
* :class:`~keys.keystore.pkcs11.Pkcs11Keystore`: a PKCS#11 token (an HSM),
  keys generated inside it and never extractable, ES256 and EdDSA.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Any, Mapping

from healthcode import Algorithm, Signer, VerificationKey

from ..errors import InvalidKeySet, PolicyViolation

__all__ = ["KeyHandle", "Keystore", "KeystoreSigner", "check_label", "MAX_LABEL_LENGTH"]

MAX_LABEL_LENGTH = 64


def check_label(label: object) -> str:
    """A key label: 1 to 64 printable characters (it ends up in file names' metadata and HSM objects)."""
    if not isinstance(label, str) or not 1 <= len(label) <= MAX_LABEL_LENGTH or not label.isprintable():
        raise PolicyViolation(f"a key label must be 1 to {MAX_LABEL_LENGTH} printable characters")
    return label


@dataclass(frozen=True, slots=True)
class KeyHandle:
    """Names one key in one keystore. Public data only: safe to log, persist and publish.

    ``backend`` is the keystore kind (``"file"``, ``"pkcs11"``); ``id`` is
    opaque to everyone but that backend; ``kid`` and ``algorithm`` are the
    public key's, so a handle can be checked against the key it names.
    """

    backend: str
    id: str
    kid: bytes
    algorithm: Algorithm
    label: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "algorithm", Algorithm(self.algorithm))
        if not isinstance(self.kid, bytes) or not 1 <= len(self.kid) <= 32:
            raise InvalidKeySet("a key handle's kid must be 1 to 32 bytes")
        if not isinstance(self.backend, str) or not self.backend or not isinstance(self.id, str) or not self.id:
            raise InvalidKeySet("a key handle needs a backend and an id")

    def to_json(self) -> dict[str, str]:
        return {"backend": self.backend, "id": self.id, "kid": self.kid.hex(),
                "algorithm": self.algorithm.value, "label": self.label}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "KeyHandle":
        if not isinstance(data, Mapping) or set(data) != {"backend", "id", "kid", "algorithm", "label"}:
            raise InvalidKeySet("a key handle has exactly: backend, id, kid, algorithm, label")
        try:
            return cls(backend=data["backend"], id=data["id"], kid=bytes.fromhex(data["kid"]),
                       algorithm=Algorithm(data["algorithm"]), label=data["label"])
        except (TypeError, ValueError):
            raise InvalidKeySet("malformed key handle") from None

    def __repr__(self) -> str:
        return f"KeyHandle({self.backend}:{self.id} kid={self.kid.hex()} {self.algorithm.value} {self.label!r})"


class KeystoreSigner(Signer):
    """A :class:`healthcode.Signer` that also tells its public key."""

    def public_key(self) -> VerificationKey:  # pragma: no cover - interface
        raise NotImplementedError


class Keystore(abc.ABC):
    """Where private keys live. Every method may raise :class:`~keys.errors.KeyManagementError`."""

    #: The ``KeyHandle.backend`` of this keystore's handles.
    backend: str

    @abc.abstractmethod
    def generate(self, algorithm: Algorithm, *, label: str) -> KeyHandle:
        """Create a new key pair of ``algorithm``; return its handle."""

    @abc.abstractmethod
    def load_signer(self, handle: KeyHandle) -> KeystoreSigner:
        """A signer for the key ``handle`` names (kid = ``handle.kid``)."""

    @abc.abstractmethod
    def public_key(self, handle: KeyHandle) -> VerificationKey:
        """The public key ``handle`` names (no passphrase or PIN needed where the backend allows)."""

    @abc.abstractmethod
    def list(self) -> tuple[KeyHandle, ...]:
        """Every key in the keystore, oldest first where the backend knows."""

    @abc.abstractmethod
    def destroy(self, handle: KeyHandle) -> None:
        """Delete the key for good (for expired keys). A missing key raises ``key_not_found``."""

    def close(self) -> None:
        """Release sessions and files (the keystore is unusable afterwards).

        An optional hook, not abstract: this default has nothing to release;
        backends that hold sessions or open files override it.
        """
        return None

    def __enter__(self) -> "Keystore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check_handle(self, handle: object) -> KeyHandle:
        if not isinstance(handle, KeyHandle):
            raise TypeError("expected a KeyHandle")
        if handle.backend != self.backend:
            raise PolicyViolation(f"key {handle.kid.hex()} lives in a {handle.backend} keystore, not {self.backend}")
        return handle
