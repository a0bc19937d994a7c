"""Identity numbers at rest: a keyed blind index for lookup, AES-GCM for the value.

A document number never reaches the database in clear. The store holds, per
document:

* ``blind_index(canonical)``: HMAC-SHA256 under the blind-index key. Lookups
  compare these. An *unkeyed* hash would not do: there are only about 1e11
  well-formed resident ID numbers, so a stolen table of SHA-256 values is
  reversed by enumeration in hours. Without the key the HMAC values reveal
  nothing.
* ``seal(canonical, aad=...)``: AES-256-GCM under the encryption key, with a
  random 96-bit nonce, so the number can be recovered by whoever holds the key
  (audit, re-indexing) and by no one else. The ``aad`` binds a sealed value to
  its row (the index passes the blind index), so values cannot be swapped
  between rows unnoticed.

Both keys come from configuration or a keystore and are never stored in the
database. Sealed values start with a key-version byte: a vault seals with its
current key and still opens values sealed under the retired keys it is given,
so the encryption key can rotate while old rows stay readable (re-seal them
with :meth:`IdentifierVault.reseal` at leisure). The blind-index key cannot
rotate the same way (lookups need one stable value per number): rotating it
means recomputing every row's index from its opened value.

Nothing here logs, and no exception message contains a number.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Callable, Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from .errors import IssuerError

__all__ = ["IdentifierVault", "SealedValueError", "KEY_BYTES", "BLIND_INDEX_BYTES"]

KEY_BYTES = 32
BLIND_INDEX_BYTES = 32
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEADER_BYTES = 1 + _NONCE_BYTES
# The key version byte is authenticated with the caller's AAD, under a label
# that keeps these ciphertexts apart from any other use of the key.
_AAD_LABEL = b"healthcode/issuer/identifier/v1"
_HKDF_INFO_INDEX = b"healthcode issuer blind index key v1"
_HKDF_INFO_SEAL = b"healthcode issuer identifier encryption key v1"


class SealedValueError(IssuerError):
    """A sealed value cannot be opened: tampered, wrong row, or an unknown key version."""

    reason = "internal"


def _check_key(name: str, key: bytes) -> bytes:
    if not isinstance(key, (bytes, bytearray)) or len(key) != KEY_BYTES:
        raise ValueError(f"{name} must be {KEY_BYTES} bytes")
    return bytes(key)


def _check_version(version: int) -> int:
    if type(version) is not int or not 1 <= version <= 255:
        raise ValueError("key_version must be an integer in 1..255")
    return version


class IdentifierVault:
    """Blind-indexes and seals canonical document bytes. Holds keys; never logs.

    ``key_version`` tags what :meth:`seal` produces; ``retired_encryption_keys``
    maps older versions to their keys so :meth:`open` still reads them.
    ``random_bytes`` supplies the nonces (``os.urandom``; replaceable in tests).
    """

    __slots__ = ("_index_key", "_version", "_aeads", "_random_bytes")

    def __init__(
        self,
        *,
        blind_index_key: bytes,
        encryption_key: bytes,
        key_version: int = 1,
        retired_encryption_keys: Mapping[int, bytes] | None = None,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> None:
        index_key = _check_key("blind_index_key", blind_index_key)
        seal_key = _check_key("encryption_key", encryption_key)
        if hmac.compare_digest(index_key, seal_key):
            raise ValueError("blind_index_key and encryption_key must differ")
        version = _check_version(key_version)
        aeads = {}
        for old_version, old_key in (retired_encryption_keys or {}).items():
            if _check_version(old_version) == version:
                raise ValueError("a retired key cannot have the current key_version")
            aeads[old_version] = AESGCM(_check_key("retired encryption key", old_key))
        aeads[version] = AESGCM(seal_key)
        self._index_key = index_key
        self._version = version
        self._aeads = aeads
        self._random_bytes = random_bytes

    @classmethod
    def from_secret(
        cls,
        master: bytes,
        *,
        key_version: int = 1,
        random_bytes: Callable[[int], bytes] = os.urandom,
    ) -> "IdentifierVault":
        """Derive both keys from one secret of at least 32 bytes (HKDF-SHA256).

        Rotating the master changes the blind-index key too, so use it for a
        fresh deployment; rotate a running one with explicit keys.
        """
        if not isinstance(master, (bytes, bytearray)) or len(master) < KEY_BYTES:
            raise ValueError(f"master secret must be at least {KEY_BYTES} bytes")

        def derive(info: bytes) -> bytes:
            return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(bytes(master))

        return cls(
            blind_index_key=derive(_HKDF_INFO_INDEX),
            encryption_key=derive(_HKDF_INFO_SEAL),
            key_version=key_version,
            random_bytes=random_bytes,
        )

    @property
    def key_version(self) -> int:
        """The version byte :meth:`seal` writes."""
        return self._version

    def blind_index(self, canonical: bytes) -> bytes:
        """HMAC-SHA256 of ``canonical`` under the blind-index key (32 bytes)."""
        return hmac.new(self._index_key, canonical, hashlib.sha256).digest()

    def seal(self, canonical: bytes, *, aad: bytes) -> bytes:
        """``version || nonce || AES-256-GCM(canonical) || tag``, bound to ``aad``."""
        header = bytes((self._version,)) + self._random_bytes(_NONCE_BYTES)
        if len(header) != _HEADER_BYTES:
            raise ValueError("random_bytes returned the wrong length")
        return header + self._aeads[self._version].encrypt(header[1:], canonical, _AAD_LABEL + header[:1] + aad)

    def open(self, sealed: bytes, *, aad: bytes) -> bytes:
        """The canonical bytes inside ``sealed``; raise :class:`SealedValueError` if it does not authenticate."""
        if not isinstance(sealed, (bytes, bytearray)) or len(sealed) < _HEADER_BYTES + _TAG_BYTES:
            raise SealedValueError("sealed value is truncated")
        aead = self._aeads.get(sealed[0])
        if aead is None:
            raise SealedValueError(f"sealed value uses unknown key version {sealed[0]}")
        try:
            return aead.decrypt(bytes(sealed[1:_HEADER_BYTES]), bytes(sealed[_HEADER_BYTES:]),
                                _AAD_LABEL + bytes(sealed[:1]) + aad)
        except InvalidTag:
            raise SealedValueError("sealed value failed authentication") from None

    def needs_reseal(self, sealed: bytes) -> bool:
        """True when ``sealed`` was made under an older key version (the rotation hook)."""
        return len(sealed) > 0 and sealed[0] != self._version

    def reseal(self, sealed: bytes, *, aad: bytes) -> bytes:
        """Open ``sealed`` and seal it again under the current key version."""
        return self.seal(self.open(sealed, aad=aad), aad=aad)

    def __repr__(self) -> str:
        return f"<IdentifierVault key_version={self._version}>"

    def __reduce__(self):  # keys must not travel by pickle (e.g. into a log or a process pool)
        raise TypeError("IdentifierVault cannot be pickled")
