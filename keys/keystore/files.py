"""Keys in passphrase-encrypted PKCS#8 files: the default keystore.

Layout: one directory (created 0700), two files per key, both written
atomically (:func:`shellkit.files.write_file_atomically`: temp file in the same
directory, ``fsync``, ``os.replace``, directory ``fsync``) with mode 0600::

    <kid hex>.pem    -----BEGIN ENCRYPTED PRIVATE KEY----- (PKCS#8, RFC 5958)
    <kid hex>.json   {"format": "healthcode-key", "version": 1, "kid", "algorithm",
                      "label", "created", "public_key": base64 SPKI DER}

The sidecar holds only public data, so :meth:`FileKeystore.list` and
:meth:`FileKeystore.public_key` need no passphrase.

The key file's encryption (PBES2, scrypt, AES-256-CBC, which OpenSSL opens
too) and the per-algorithm ``PrivateKeyInfo`` are the codec in
:mod:`keys.keystore.pkcs8`; this module adds the files, the sidecar and the
signer.

Private key material lives only in memory, in the signer; no repr, str,
exception or log message of this module contains it or the passphrase.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import pathlib
import re
from typing import Callable

from cryptography.hazmat.primitives import serialization

import healthcode
from healthcode import Algorithm, SigningKey, VerificationKey, load_public_key_der
from healthcode.errors import HealthCodeError
from shellkit.files import fsync_directory, write_file_atomically

from ..errors import (
    KeyFileCorrupt,
    KeyNotFound,
    KeystoreIOError,
    PolicyViolation,
    UnsupportedKeyAlgorithm,
    WrongPassphrase,
)
from .base import KeyHandle, Keystore, KeystoreSigner, check_label
from .pkcs8 import (
    PEM_BEGIN,
    ScryptParams,
    decrypt_private_key_info,
    encrypt_private_key_info,
    pem_decode,
    pem_encode,
    private_key_info,
    secret_of,
    signing_key_from_cryptography_key,
    signing_key_from_private_key_info,
)

__all__ = [
    "FileKeystore",
    "FileKeySigner",
    "MIN_PASSPHRASE_BYTES",
]

MIN_PASSPHRASE_BYTES = 8
_MAX_KEY_FILE = 16 * 1024
_MAX_SIDECAR = 16 * 1024
_ID = re.compile(r"^[0-9a-f]{2,64}$")
#: The scrypt cost of new key files (frozen, so one shared default instance is safe).
_DEFAULT_SCRYPT = ScryptParams()


def _utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


# --------------------------------------------------------------------------- the signer


class FileKeySigner(KeystoreSigner):
    """Signs with a key loaded from a key file. Holds the private key in memory only."""

    __slots__ = ("kid", "algorithm", "label", "_key", "_public")

    def __init__(self, key: SigningKey, handle: KeyHandle) -> None:
        self._key = key
        self._public = key.public_key()
        self.kid = handle.kid
        self.algorithm = key.algorithm
        self.label = handle.label

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)

    def public_key(self) -> VerificationKey:
        return self._public

    def __repr__(self) -> str:
        return f"<FileKeySigner {self.algorithm.value} kid={self.kid.hex()} label={self.label!r}>"

    def __reduce__(self):  # never serialise a private key by accident
        raise TypeError("a signer cannot be pickled")


# --------------------------------------------------------------------------- the keystore


class FileKeystore(Keystore):
    """Keys as encrypted PKCS#8 files in ``directory``; one passphrase for the whole keystore.

    ``passphrase`` may be None to list keys and read public keys only.
    ``clock`` stamps ``created`` on new keys; ``scrypt`` sets the cost of new
    files.
    """

    backend = "file"

    def __init__(
        self,
        directory: os.PathLike | str,
        passphrase: bytes | str | None,
        *,
        scrypt: ScryptParams = _DEFAULT_SCRYPT,
        clock: Callable[[], dt.datetime] = _utc_now,
    ) -> None:
        self.directory = pathlib.Path(directory)
        if isinstance(passphrase, str):
            passphrase = passphrase.encode("utf-8")
        if passphrase is not None and (not isinstance(passphrase, bytes) or not passphrase):
            raise PolicyViolation("the keystore passphrase must be non-empty")
        self.__passphrase = passphrase
        self._scrypt = scrypt
        self._clock = clock

    def __repr__(self) -> str:
        return f"<FileKeystore {str(self.directory)!r}>"

    # -- paths

    def _paths(self, key_id: str) -> tuple[pathlib.Path, pathlib.Path]:
        if not isinstance(key_id, str) or not _ID.match(key_id):
            raise KeyNotFound("not a file keystore key id")
        return self.directory / f"{key_id}.pem", self.directory / f"{key_id}.json"

    def _passphrase_for(self, purpose: str) -> bytes:
        passphrase = self.__passphrase
        if passphrase is None:
            raise WrongPassphrase(f"the keystore was opened without a passphrase: cannot {purpose}")
        return passphrase

    def _ensure_directory(self) -> None:
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as e:
            raise KeystoreIOError(f"cannot create keystore directory {self.directory}: {e.strerror}") from None

    # -- writing

    def generate(self, algorithm: Algorithm, *, label: str) -> KeyHandle:
        """Generate a software key of ``algorithm`` and store it encrypted."""
        try:
            key = healthcode.generate_signing_key(Algorithm(algorithm))
        except HealthCodeError as exc:  # SM2 without the sm2 extra
            raise UnsupportedKeyAlgorithm(str(exc)) from None
        return self.import_key(key, label=label)

    def import_key(self, key: SigningKey, *, label: str) -> KeyHandle:
        """Store an existing healthcode software key (migration from a single PEM, test vectors)."""
        label = check_label(label)
        passphrase = self._passphrase_for("write a key")
        if len(passphrase) < MIN_PASSPHRASE_BYTES:
            raise PolicyViolation(f"a keystore passphrase needs at least {MIN_PASSPHRASE_BYTES} bytes")
        algorithm = key.algorithm
        public = key.public_key()
        kid = public.key_id()
        handle = KeyHandle(backend=self.backend, id=kid.hex(), kid=kid, algorithm=algorithm, label=label)
        key_path, meta_path = self._paths(handle.id)
        self._ensure_directory()
        if meta_path.exists() or key_path.exists():
            raise PolicyViolation(f"key {kid.hex()} is already in the keystore")
        der = encrypt_private_key_info(private_key_info(algorithm, secret_of(key), public), passphrase, self._scrypt)
        created = self._clock().astimezone(dt.timezone.utc).replace(microsecond=0)
        meta = {
            "format": "healthcode-key",
            "version": 1,
            "kid": kid.hex(),
            "algorithm": algorithm.value,
            "label": label,
            "created": created.isoformat().replace("+00:00", "Z"),
            "public_key": base64.b64encode(public.spki_der()).decode("ascii"),
        }
        try:
            # The key first: a sidecar never names a key file that is not there.
            write_file_atomically(key_path, pem_encode(der))
            write_file_atomically(meta_path, json.dumps(meta, indent=2).encode("utf-8") + b"\n")
        except OSError as e:
            raise KeystoreIOError(f"cannot write key {kid.hex()} to {self.directory}: {e.strerror}") from None
        return handle

    def import_pem(self, pem: bytes, passphrase: bytes | None, *, label: str) -> KeyHandle:
        """Import a PKCS#8 PEM private key (P-256, Ed25519 or SM2; plain, or encrypted with
        ``passphrase``), stored re-encrypted under this keystore's passphrase. For moving a
        single ``signing_key`` file, or an ``openssl genpkey`` key, into the keystore."""
        try:
            signing = signing_key_from_cryptography_key(serialization.load_pem_private_key(pem, password=passphrase))
        except TypeError:
            raise WrongPassphrase("give the PEM's passphrase if and only if it is encrypted") from None
        except UnsupportedKeyAlgorithm:
            raise
        except Exception:  # cryptography cannot hold SM2 keys (nor read a wrong passphrase's result)
            text = pem.decode("ascii", "replace")
            if PEM_BEGIN in text:
                if passphrase is None:
                    raise WrongPassphrase("the PEM is encrypted: give its passphrase") from None
                try:
                    info = decrypt_private_key_info(pem_decode(pem), passphrase)
                except KeyFileCorrupt:  # PBKDF2 or another scheme cryptography failed to open
                    raise WrongPassphrase("wrong passphrase, or an encryption other than PBES2") from None
            else:
                begin, end = "-----BEGIN PRIVATE KEY-----", "-----END PRIVATE KEY-----"
                start, stop = text.find(begin), text.find(end)
                if start < 0 or stop < start:
                    raise KeyFileCorrupt("not a PKCS#8 PEM private key") from None
                try:
                    info = base64.b64decode("".join(text[start + len(begin) : stop].split()), validate=True)
                except (binascii.Error, ValueError):
                    raise KeyFileCorrupt("the PEM body is not base64") from None
            try:
                signing = signing_key_from_private_key_info(info)
            except WrongPassphrase:
                raise WrongPassphrase("wrong passphrase for the PEM, or not a key") from None
        return self.import_key(signing, label=label)

    def destroy(self, handle: KeyHandle) -> None:
        """Delete both files (the sidecar first, so the key vanishes from :meth:`list` at once).

        Unlinking does not scrub the blocks on disk; the passphrase still
        protects any copy left behind (and in backups).
        """
        handle = self._check_handle(handle)
        key_path, meta_path = self._paths(handle.id)
        self._read_meta(meta_path, handle)  # refuses a handle that names another key
        try:
            meta_path.unlink()
            key_path.unlink(missing_ok=True)
        except OSError as e:
            raise KeystoreIOError(f"cannot delete key {handle.kid.hex()}: {e.strerror}") from None
        fsync_directory(self.directory)

    # -- reading

    def _read(self, path: pathlib.Path, limit: int, what: str) -> bytes:
        try:
            with open(path, "rb") as f:
                data = f.read(limit + 1)
        except FileNotFoundError:
            raise KeyNotFound(f"no {what} {path.name} in {self.directory}") from None
        except OSError as e:
            raise KeystoreIOError(f"cannot read {what} {path}: {e.strerror}") from None
        if len(data) > limit:
            raise KeyFileCorrupt(f"{what} {path.name} is too large")
        return data

    def _read_meta(
        self, path: pathlib.Path, expected: KeyHandle | None = None
    ) -> tuple[KeyHandle, VerificationKey, dt.datetime]:
        raw = self._read(path, _MAX_SIDECAR, "key metadata")
        try:
            meta = json.loads(raw)
            if not isinstance(meta, dict) or meta.get("format") != "healthcode-key" or meta.get("version") != 1:
                raise ValueError("not a healthcode-key v1 file")
            if set(meta) != {"format", "version", "kid", "algorithm", "label", "created", "public_key"}:
                raise ValueError("unexpected fields")
            public = load_public_key_der(base64.b64decode(meta["public_key"], validate=True))
            kid = bytes.fromhex(meta["kid"])
            algorithm = Algorithm(meta["algorithm"])
            created = dt.datetime.fromisoformat(meta["created"])
            if created.tzinfo is None:
                raise ValueError("created has no timezone")
            label = check_label(meta["label"])
        except (ValueError, TypeError, KeyError, binascii.Error, HealthCodeError, PolicyViolation):
            raise KeyFileCorrupt(f"key metadata {path.name} is malformed") from None
        if public.key_id() != kid or public.algorithm is not algorithm or path.stem != kid.hex():
            raise KeyFileCorrupt(f"key metadata {path.name} does not match its public key")
        handle = KeyHandle(backend=self.backend, id=kid.hex(), kid=kid, algorithm=algorithm, label=label)
        if expected is not None and (expected.kid != kid or expected.algorithm is not algorithm):
            raise KeyNotFound(f"key {expected.id} is not the key the handle names")
        return handle, public, created

    def list(self) -> tuple[KeyHandle, ...]:
        """Every key with a sidecar, oldest first (a key file without one is an interrupted write)."""
        try:
            names = sorted(p for p in self.directory.glob("*.json") if _ID.match(p.stem))
        except OSError as e:
            raise KeystoreIOError(f"cannot list {self.directory}: {e.strerror}") from None
        entries = [self._read_meta(p) for p in names]
        entries.sort(key=lambda e: (e[2], e[0].id))
        return tuple(handle for handle, _, _ in entries)

    def public_key(self, handle: KeyHandle) -> VerificationKey:
        handle = self._check_handle(handle)
        return self._read_meta(self._paths(handle.id)[1], handle)[1]

    def load_signer(self, handle: KeyHandle) -> FileKeySigner:
        """Decrypt the key ``handle`` names (an scrypt derivation: call it once per key, not per code)."""
        handle = self._check_handle(handle)
        key_path, meta_path = self._paths(handle.id)
        _, public, _ = self._read_meta(meta_path, handle)
        passphrase = self._passphrase_for("load a key")
        der = pem_decode(self._read(key_path, _MAX_KEY_FILE, "key file"))
        try:
            key = signing_key_from_private_key_info(decrypt_private_key_info(der, passphrase))
        except WrongPassphrase:
            raise WrongPassphrase(f"wrong passphrase for key {handle.kid.hex()} ({handle.label})") from None
        if key.public_key() != public:
            raise KeyFileCorrupt(f"key file {key_path.name} does not hold the key its metadata names")
        return FileKeySigner(key, handle)
