"""The national blind index: HMAC-SHA256 of a document's canonical form under the national key.

The national index never holds a document number, nor an unkeyed hash of one
(about 1e11 well-formed resident ID numbers: a table of SHA-256 values is
reversed by enumeration in hours). It holds ``HMAC-SHA256(national key,
issuer.documents.canonical_form(document))``, 32 bytes, computed here and
only here. The national key is not any province's blind-index key: a
province's database and the national one cannot be joined without both keys.

The key lives in a keystore, like the provinces' signing keys:

* ``file``: :class:`FileNationalKey`, one file ``<directory>/<label>.key.json``
  (owner-only) holding the 32-byte key sealed with AES-256-GCM under a key
  derived from a passphrase with scrypt (N=2^15, r=8, p=1); the passphrase
  comes from the environment variable the configuration names;
* ``pkcs11``: :class:`Pkcs11NationalKey`, a ``CKK_GENERIC_SECRET`` key of 256
  bits generated inside the token (``SENSITIVE``, not ``EXTRACTABLE``,
  ``SIGN`` only) and used with ``CKM_SHA256_HMAC``: the key never leaves the
  HSM. Tested with SoftHSM2.

:func:`generate_national_key` creates one (refusing to overwrite),
:func:`open_national_key` opens one from configuration values. The key cannot
rotate in place: lookups need one stable value per document, so a new key
means re-indexing from the provinces (docs/national.md, "Keys").

Nothing here logs, and no message carries key material or a number.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import pathlib
import re
import threading
from typing import Any, Protocol

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from issuer.documents import Document, canonical_form
from shellkit.files import InsecureFileMode, read_secret, write_file_atomically

from .errors import NationalKeyError

__all__ = [
    "BlindIndexer",
    "NationalBlindIndex",
    "HmacKey",
    "FileNationalKey",
    "Pkcs11NationalKey",
    "generate_national_key",
    "open_national_key",
    "KEY_FORMAT",
    "BLIND_INDEX_BYTES",
    "DEFAULT_LABEL",
]

KEY_FORMAT = "healthcode-national-key/1"
BLIND_INDEX_BYTES = 32
DEFAULT_LABEL = "national-blind-index"
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCRYPT = {"n": 2**15, "r": 8, "p": 1}
_MAX_KEY_FILE = 4096


class HmacKey(Protocol):
    """A keyed HMAC-SHA256 the caller cannot read the key of."""

    def hmac_sha256(self, data: bytes) -> bytes: ...

    def close(self) -> None: ...


class BlindIndexer(Protocol):
    """What the store and the domain ask of the blind index."""

    def blind_index(self, document: Document) -> bytes: ...


class NationalBlindIndex:
    """``blind_index(document)`` = HMAC-SHA256 of its canonical form under the national key (32 bytes)."""

    __slots__ = ("_key",)

    def __init__(self, key: HmacKey) -> None:
        self._key = key

    def blind_index(self, document: Document) -> bytes:
        value = self._key.hmac_sha256(canonical_form(document))
        if len(value) != BLIND_INDEX_BYTES:
            raise NationalKeyError("the national key gave an HMAC of the wrong length")
        return value

    def __repr__(self) -> str:
        return "<NationalBlindIndex>"

    def __reduce__(self):  # keys must not travel by pickle
        raise TypeError("the national blind index cannot be pickled")


class SoftwareHmacKey:
    """A 32-byte key held in memory (what the file keystore opens, and tests)."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if not isinstance(key, bytes) or len(key) != 32:
            raise NationalKeyError("the national key must be 32 bytes")
        self._key = key

    def hmac_sha256(self, data: bytes) -> bytes:
        return hmac.new(self._key, data, hashlib.sha256).digest()

    def close(self) -> None:
        return None

    def __repr__(self) -> str:
        return "<SoftwareHmacKey>"

    def __reduce__(self):
        raise TypeError("a key cannot be pickled")


def _check_label(label: str) -> str:
    if not isinstance(label, str) or not _LABEL.fullmatch(label):
        raise NationalKeyError("a key label is 1-64 characters of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
    return label


def _kek(passphrase: bytes, salt: bytes, params: dict[str, int]) -> bytes:
    return Scrypt(salt=salt, length=32, n=params["n"], r=params["r"], p=params["p"]).derive(passphrase)


class FileNationalKey(SoftwareHmacKey):
    """The national key from the file keystore: ``<directory>/<label>.key.json`` (see the module docstring)."""

    @staticmethod
    def path(directory: os.PathLike[str] | str, label: str) -> pathlib.Path:
        return pathlib.Path(directory) / f"{_check_label(label)}.key.json"

    @classmethod
    def generate(cls, directory: os.PathLike[str] | str, label: str, passphrase: bytes,
                 *, scrypt: dict[str, int] | None = None) -> pathlib.Path:
        """Create a new random key file (owner-only; refuses to overwrite one). Returns its path."""
        if not passphrase:
            raise NationalKeyError("the file keystore needs a passphrase")
        params = dict(scrypt or _SCRYPT)
        path = cls.path(directory, label)
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        salt, nonce, key = os.urandom(16), os.urandom(12), os.urandom(32)
        aad = f"{KEY_FORMAT}:{label}".encode()
        sealed = AESGCM(_kek(passphrase, salt, params)).encrypt(nonce, key, aad)
        document = {"format": KEY_FORMAT, "label": label, "algorithm": "HMAC-SHA256",
                    "kdf": {"name": "scrypt", **params, "salt": salt.hex()},
                    "nonce": nonce.hex(), "sealed_key": sealed.hex()}
        if path.exists():
            raise NationalKeyError(f"{path} exists: a national key is never overwritten")
        data = (json.dumps(document, sort_keys=True) + "\n").encode("ascii")
        write_file_atomically(path, data)  # owner-only, fsynced, directory fsynced
        return path

    @classmethod
    def open(cls, directory: os.PathLike[str] | str, label: str, passphrase: bytes) -> "FileNationalKey":
        """Open the key file (it must be owner-only); a wrong passphrase raises :class:`NationalKeyError`."""
        path = cls.path(directory, label)
        try:
            raw = read_secret(path, what="national key file")
        except InsecureFileMode as e:
            raise NationalKeyError(str(e)) from None
        except OSError as e:
            raise NationalKeyError(f"cannot read the national key file {path}: {e.strerror}") from None
        if len(raw) > _MAX_KEY_FILE:
            raise NationalKeyError(f"{path} is not a national key file (too large)")
        try:
            doc: Any = json.loads(raw)
            if doc["format"] != KEY_FORMAT or doc["label"] != label or doc["algorithm"] != "HMAC-SHA256":
                raise ValueError
            kdf = doc["kdf"]
            if kdf["name"] != "scrypt":
                raise ValueError
            params = {"n": int(kdf["n"]), "r": int(kdf["r"]), "p": int(kdf["p"])}
            salt, nonce, sealed = bytes.fromhex(kdf["salt"]), bytes.fromhex(doc["nonce"]), bytes.fromhex(
                doc["sealed_key"])
        except (ValueError, KeyError, TypeError):
            raise NationalKeyError(f"{path} is not a {KEY_FORMAT} file") from None
        try:
            key = AESGCM(_kek(passphrase, salt, params)).decrypt(nonce, sealed, f"{KEY_FORMAT}:{label}".encode())
        except InvalidTag:
            raise NationalKeyError("cannot open the national key: wrong passphrase or a damaged file") from None
        return cls(key)


def _pkcs11() -> Any:
    try:
        import pkcs11  # the `hsm` extra
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise NationalKeyError("the PKCS#11 keystore needs the 'hsm' extra: pip install 'healthcode[hsm]'") from None
    return pkcs11


class Pkcs11NationalKey:
    """The national key inside a PKCS#11 token: a generic secret used with ``CKM_SHA256_HMAC``.

    One logged-in session, one operation at a time (a lock), reopened once if the token drops it.
    """

    def __init__(self, module: os.PathLike[str] | str, token: str, pin: str | bytes, label: str) -> None:
        pkcs11 = _pkcs11()
        self._label = _check_label(label)
        self.__pin = pin.decode("utf-8") if isinstance(pin, bytes) else pin
        self._lock = threading.Lock()
        try:
            self._token = pkcs11.lib(str(module)).get_token(token_label=token)
        except pkcs11.NoSuchToken:
            raise NationalKeyError(f"no token labelled {token!r} in {module}") from None
        except pkcs11.PKCS11Error as e:
            raise NationalKeyError(f"cannot open the PKCS#11 module {module}: {type(e).__name__}") from None
        self._session: Any = None
        self._key: Any = None
        self._open()

    def _open(self) -> None:
        pkcs11 = _pkcs11()
        try:
            try:
                self._session = self._token.open(rw=True, user_pin=self.__pin)
            except pkcs11.UserAlreadyLoggedIn:
                self._session = self._token.open(rw=True)
        except pkcs11.PKCS11Error as e:
            raise NationalKeyError(f"cannot log in to the token: {type(e).__name__}") from None

    def _find(self) -> Any:
        pkcs11 = _pkcs11()
        try:
            return self._session.get_key(object_class=pkcs11.ObjectClass.SECRET_KEY,
                                         key_type=pkcs11.KeyType.GENERIC_SECRET, label=self._label)
        except pkcs11.NoSuchKey:
            return None
        except pkcs11.PKCS11Error as e:
            raise NationalKeyError(f"cannot look up the national key: {type(e).__name__}") from None

    def generate(self) -> None:
        """Create the key in the token (refuses when one with the label exists)."""
        pkcs11 = _pkcs11()
        attr = pkcs11.Attribute
        with self._lock:
            if self._find() is not None:
                raise NationalKeyError(f"the token already holds a key labelled {self._label!r}")
            try:
                self._session.generate_key(pkcs11.KeyType.GENERIC_SECRET, 256, label=self._label, store=True,
                                           template={attr.SENSITIVE: True, attr.EXTRACTABLE: False, attr.SIGN: True,
                                                     attr.VERIFY: True, attr.ENCRYPT: False, attr.DECRYPT: False,
                                                     attr.WRAP: False, attr.UNWRAP: False, attr.DERIVE: False,
                                                     attr.PRIVATE: True})
            except pkcs11.PKCS11Error as e:
                raise NationalKeyError(f"the token cannot create the national key: {type(e).__name__}") from None

    def hmac_sha256(self, data: bytes) -> bytes:
        pkcs11 = _pkcs11()
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._key is None:
                        self._key = self._find()
                        if self._key is None:
                            raise NationalKeyError(f"the token holds no key labelled {self._label!r}")
                    return bytes(self._key.sign(data, mechanism=pkcs11.Mechanism.SHA256_HMAC))
                except (pkcs11.SessionClosed, pkcs11.SessionHandleInvalid, pkcs11.UserNotLoggedIn):
                    if attempt == 2:
                        raise NationalKeyError("the token's session was lost twice") from None
                    self._key = None
                    self._open()
                except pkcs11.PKCS11Error as e:
                    raise NationalKeyError(f"the token cannot compute the HMAC: {type(e).__name__}") from None
        raise AssertionError("unreachable")

    def close(self) -> None:
        with self._lock:
            if self._session is not None:
                try:
                    self._session.close()
                except Exception:  # noqa: BLE001 - closing a dead session is not an error
                    pass
                self._session = None
                self._key = None

    def __repr__(self) -> str:
        return f"<Pkcs11NationalKey label={self._label!r}>"

    def __reduce__(self):
        raise TypeError("a key cannot be pickled")


def generate_national_key(kind: str, *, label: str = DEFAULT_LABEL, secret: bytes,
                          directory: os.PathLike[str] | str | None = None,
                          module: os.PathLike[str] | str | None = None, token: str | None = None) -> str:
    """Create the national key in the ``file`` or ``pkcs11`` keystore; returns where it is (for the operator)."""
    if kind == "file":
        if directory is None:
            raise NationalKeyError("a file keystore needs a directory")
        return str(FileNationalKey.generate(directory, label, secret))
    if kind == "pkcs11":
        if module is None or not token:
            raise NationalKeyError("a PKCS#11 keystore needs a module path and a token label")
        key = Pkcs11NationalKey(module, token, secret, label)
        try:
            key.generate()
        finally:
            key.close()
        return f"pkcs11 token {token!r}, label {label!r}"
    raise NationalKeyError(f"unknown keystore kind {kind!r} (file or pkcs11)")


def open_national_key(kind: str, *, label: str = DEFAULT_LABEL, secret: bytes,
                      directory: os.PathLike[str] | str | None = None,
                      module: os.PathLike[str] | str | None = None, token: str | None = None) -> HmacKey:
    """Open the national key; the result's ``close()`` releases the token session."""
    if kind == "file":
        if directory is None:
            raise NationalKeyError("a file keystore needs a directory")
        return FileNationalKey.open(directory, label, secret)
    if kind == "pkcs11":
        if module is None or not token:
            raise NationalKeyError("a PKCS#11 keystore needs a module path and a token label")
        key = Pkcs11NationalKey(module, token, secret, label)
        key.hmac_sha256(b"healthcode national key check")  # fails now, not at the first claim
        return key
    raise NationalKeyError(f"unknown keystore kind {kind!r} (file or pkcs11)")
