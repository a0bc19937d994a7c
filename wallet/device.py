"""The phone's device key: one small protocol, two homes.

:class:`DeviceKey` is all the wallet needs from a key: the SEC 1 public point
(``public_point``) and ECDSA P-256 with SHA-256 signatures as raw ``r || s``,
64 bytes (``sign``), which is the form the core's presentations and the
issuer's proof of possession use. Where a province allows them, the key may
be SM2 instead (``algorithm`` SM2-SM3: SM2 with SM3, signer ID
``1234567812345678``, raw ``r || s`` too); SM2 keys live in the ``file``
keystore only: PKCS#11 has no standard SM2 mechanism and SoftHSM2 has none,
so there is no SM2 secure-element model here. Two implementations, both over
the project's keystores (:mod:`keys.keystore`), never a copy of them:

* ``file``: a software key in an owner-only, passphrase-encrypted PKCS#8
  file (PBES2, scrypt, AES-256-CBC) in ``<wallet>/device-key/`` (a 0700
  directory), like an app keeping its key in the platform keystore's files;
* ``pkcs11``: a key generated *inside* a PKCS#11 token, private half
  sensitive and not extractable: SoftHSM2 here, standing in for a phone's
  secure element (Secure Enclave, StrongBox). The token signs with
  ``CKM_ECDSA`` over the SHA-256 digest computed here (SoftHSM 2.6 lacks
  ``CKM_ECDSA_SHA256``); the private key never leaves it.

:class:`DeviceKeyConfig` is the public description persisted in the wallet's
state (kind, the key's handle, module and token label); the passphrase or PIN
is never persisted.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from healthcode import Algorithm
from healthcode.algorithms import VerificationKey
from keys.errors import KeyManagementError
from keys.keystore import FileKeystore, KeyHandle, Keystore, KeystoreSigner, Pkcs11Keystore, ScryptParams

from .errors import DeviceKeyError, StateCorrupt

__all__ = ["DeviceKey", "DeviceKeyConfig", "KeystoreDeviceKey", "create_device_key", "open_device_key",
           "KEY_KINDS", "DEVICE_KEY_LABEL", "DEFAULT_SCRYPT", "DEVICE_KEY_ALGORITHMS"]

KEY_KINDS = ("file", "pkcs11")
#: Device key algorithms, with the curve's name: P-256 everywhere, SM2 where a province asks for it (file only).
DEVICE_KEY_ALGORITHMS = {Algorithm.ES256: "P-256", Algorithm.SM2_SM3: "SM2"}
DEVICE_KEY_LABEL = "healthcode-wallet device key"
_KEY_DIRECTORY = "device-key"
#: The key file's encryption cost: the keystore's default (scrypt N=2**14, r=8, p=4, about 0.1 s).
DEFAULT_SCRYPT = ScryptParams()


class DeviceKey(Protocol):
    """What the wallet needs from the phone's key (ECDSA P-256 with SHA-256, or SM2 with SM3)."""

    def public_point(self) -> bytes:
        """The public key, SEC 1 uncompressed: ``04 || x || y`` (65 bytes)."""
        ...

    def sign(self, data: bytes) -> bytes:
        """ECDSA P-256 over SHA-256(``data``) (or SM2-SM3 over ``data``): raw ``r || s``, 64 bytes."""
        ...


class KeystoreDeviceKey:
    """A :class:`DeviceKey` over a keystore signer (file or PKCS#11); holds no key material itself."""

    def __init__(self, signer: KeystoreSigner, keystore: Keystore) -> None:
        if signer.algorithm not in DEVICE_KEY_ALGORITHMS:
            raise DeviceKeyError(f"a device key must be ES256 (P-256) or SM2-SM3, not {signer.algorithm.value}")
        self._signer = signer
        self._keystore = keystore
        self._point = signer.public_key().spki_der()[-65:]  # the point ends a P-256 or SM2 SubjectPublicKeyInfo

    @property
    def algorithm(self) -> Algorithm:
        """ES256 (P-256) or SM2-SM3."""
        return self._signer.algorithm

    def public_key(self) -> VerificationKey:
        """The public key, for the proof of possession's input."""
        return self._signer.public_key()

    def public_point(self) -> bytes:
        return self._point

    def sign(self, data: bytes) -> bytes:
        try:
            signature = self._signer.sign(data)
        except KeyManagementError as exc:
            raise DeviceKeyError(f"the device key cannot sign: {exc}") from None
        if len(signature) != 64:
            raise DeviceKeyError(f"the device key returned a {len(signature)}-byte signature, not 64")
        return signature

    def close(self) -> None:
        self._keystore.close()

    def __repr__(self) -> str:
        return f"<KeystoreDeviceKey {self._keystore.backend} point={self._point[:5].hex()}...>"


@dataclass(frozen=True)
class DeviceKeyConfig:
    """Where the device key lives: public data only, persisted in the wallet's state file."""

    kind: str
    handle: KeyHandle
    module: str | None = None  # pkcs11: the module path
    token: str | None = None  # pkcs11: the token label

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"kind": self.kind, "handle": self.handle.to_json()}
        if self.kind == "pkcs11":
            data.update(module=self.module, token=self.token)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "DeviceKeyConfig":
        try:
            kind = data["kind"]
            handle = KeyHandle.from_json(data["handle"])
            if kind == "file" and set(data) == {"kind", "handle"}:
                return cls(kind, handle)
            if kind == "pkcs11" and set(data) == {"kind", "handle", "module", "token"} \
                    and isinstance(data["module"], str) and isinstance(data["token"], str):
                return cls(kind, handle, data["module"], data["token"])
        except (KeyError, TypeError, KeyManagementError):
            pass
        raise StateCorrupt("the wallet's device key entry is malformed")


def _secret(secret: bytes | str | None, what: str) -> bytes:
    if secret is None or not secret:
        raise DeviceKeyError(f"the device key needs its {what}")
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def _keystore(kind: str, wallet_dir: pathlib.Path, secret: bytes, module: str | None,
              token: str | None, scrypt: ScryptParams = DEFAULT_SCRYPT) -> Keystore:
    if kind == "file":
        return FileKeystore(wallet_dir / _KEY_DIRECTORY, secret, scrypt=scrypt)
    if kind == "pkcs11":
        if not module or not token:
            raise DeviceKeyError("a PKCS#11 device key needs the module path and the token label")
        return Pkcs11Keystore(module, token, secret)
    raise DeviceKeyError(f"unknown device key kind {kind!r} (one of: {', '.join(KEY_KINDS)})")


def create_device_key(kind: str, wallet_dir: os.PathLike[str] | str, secret: bytes | str | None, *,
                      module: str | None = None, token: str | None = None,
                      scrypt: ScryptParams = DEFAULT_SCRYPT, algorithm: Algorithm = Algorithm.ES256,
                      ) -> tuple[DeviceKeyConfig, KeystoreDeviceKey]:
    """Generate a new device key of ``kind``; its description and the key, ready to sign.

    ``algorithm`` is ES256 (P-256, the default) or SM2-SM3 (``file`` only:
    raises :class:`DeviceKeyError` for ``pkcs11``, which has no SM2 here).

    ``secret`` is the passphrase of the key file (``file``, at least 8 bytes)
    or the token's user PIN (``pkcs11``). ``scrypt`` is the key file's
    encryption cost: keep the default (the keystore's, about 0.1 s); tests
    lower it.
    """
    wallet_dir = pathlib.Path(wallet_dir)
    algorithm = Algorithm(algorithm)
    if algorithm not in DEVICE_KEY_ALGORITHMS:
        raise DeviceKeyError(f"a device key must be ES256 (P-256) or SM2-SM3, not {algorithm.value}")
    if algorithm is Algorithm.SM2_SM3 and kind == "pkcs11":
        raise DeviceKeyError("an SM2 device key cannot live in a PKCS#11 token (PKCS#11 has no standard SM2 "
                             "mechanism and SoftHSM2 has none): use the file keystore")
    raw = _secret(secret, "passphrase" if kind == "file" else "PIN")
    try:
        store = _keystore(kind, wallet_dir, raw, module, token, scrypt)
        handle = store.generate(algorithm, label=DEVICE_KEY_LABEL)
        config = DeviceKeyConfig(kind, handle, module if kind == "pkcs11" else None,
                                 token if kind == "pkcs11" else None)
        return config, KeystoreDeviceKey(store.load_signer(handle), store)
    except KeyManagementError as exc:
        raise DeviceKeyError(f"cannot create the device key: {exc}") from None


def open_device_key(config: DeviceKeyConfig, wallet_dir: os.PathLike[str] | str,
                    secret: bytes | str | None) -> KeystoreDeviceKey:
    """The device key ``config`` names, unlocked with its passphrase or PIN."""
    raw = _secret(secret, "passphrase" if config.kind == "file" else "PIN")
    try:
        store = _keystore(config.kind, pathlib.Path(wallet_dir), raw, config.module, config.token)
        return KeystoreDeviceKey(store.load_signer(config.handle), store)
    except KeyManagementError as exc:
        raise DeviceKeyError(f"cannot open the device key: {exc}") from None
