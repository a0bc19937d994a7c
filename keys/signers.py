"""TUF role signers: the keys that sign trust-repository metadata, loaded from encrypted files or a keystore.

:mod:`keys.trustrepo` signs with any ``securesystemslib.signer.Signer``. This
module makes them from what the key ceremonies leave on disk, and nothing else
reads role key files.

**Role key files.** A *holder* is a directory that one person or service
keeps (an official's USB stick, a province's admin safe, the online signing
host); it holds one or more role keys, all under the holder's one passphrase::

    <holder>/<name>.pem        Ed25519 private key, encrypted PKCS#8 (PBES2, scrypt, AES-256-CBC), mode 0600
    <holder>/<name>.pub.json   {"format": "healthcode-tuf-key", "version": 1, "name", "keyid",
                                "key": <the securesystemslib key dict>}, mode 0644

The encryption is the file keystore's (:mod:`keys.keystore.pkcs8`), so
``openssl pkey -in root.pem`` opens the file with the passphrase, without our
code. The ``.pub.json`` holds public data only: creating the repository,
delegating to a province or checking a signature never needs a passphrase.
A ``.pem`` from elsewhere (for example ``openssl genpkey -algorithm ed25519
| openssl pkcs8 -topk8 -scrypt``) loads too, as long as its ``.pub.json``
names the same key.

**Keystore keys.** :class:`KeystoreRoleSigner` turns any
:class:`keys.keystore.KeystoreSigner` (a file keystore or a PKCS#11 token
key, ES256 or EdDSA) into a TUF signer, so a province may keep its TUF role
key in the same HSM as its code-signing keys. ES256 signatures are converted
from the COSE ``r || s`` form the keystore returns to the DER form TUF's
``ecdsa-sha2-nistp256`` scheme verifies.

No function here reads the environment or prompts: the passphrase is a
parameter (the CLI gets it from an environment variable or the terminal).
Errors are :class:`~keys.errors.KeyManagementError` subclasses; none quotes a
passphrase or key material.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import pathlib
import re
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from securesystemslib.signer import CryptoSigner, Key, Signature, Signer, SSlibKey

from healthcode import Algorithm
from shellkit.files import write_file_atomically

from .errors import (
    KeyFileCorrupt,
    KeyNotFound,
    KeystoreIOError,
    PolicyViolation,
    UnsupportedKeyAlgorithm,
    WrongPassphrase,
)
from .keystore.base import KeystoreSigner
from .keystore.files import MIN_PASSPHRASE_BYTES
from .keystore.pkcs8 import ScryptParams, decrypt_private_key_info, encrypt_private_key_info

__all__ = [
    "RoleKeyFile",
    "KeystoreRoleSigner",
    "generate_role_key",
    "read_public_key",
    "load_role_signer",
    "role_key_names",
    "PUBLIC_KEY_FORMAT",
]

PUBLIC_KEY_FORMAT = "healthcode-tuf-key"
_PEM_BEGIN = "-----BEGIN ENCRYPTED PRIVATE KEY-----"
_PEM_END = "-----END ENCRYPTED PRIVATE KEY-----"
#: The scrypt cost of new role keys (frozen, so one shared default instance is safe).
_DEFAULT_SCRYPT = ScryptParams()
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_MAX_FILE = 16 * 1024


class RoleKeyFile:
    """Where the role key ``name`` of holder ``directory`` lives (paths only; nothing is read)."""

    __slots__ = ("directory", "name")

    def __init__(self, directory: os.PathLike | str, name: str) -> None:
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise PolicyViolation(f"a role key name is 1 to 64 of [a-z0-9._-], got {name!r}")
        self.directory = pathlib.Path(directory)
        self.name = name

    @property
    def private_path(self) -> pathlib.Path:
        return self.directory / f"{self.name}.pem"

    @property
    def public_path(self) -> pathlib.Path:
        return self.directory / f"{self.name}.pub.json"

    def exists(self) -> bool:
        return self.public_path.exists()

    def __repr__(self) -> str:
        return f"RoleKeyFile({str(self.directory)!r}, {self.name!r})"


def role_key_names(directory: os.PathLike | str) -> tuple[str, ...]:
    """The names of the role keys in a holder directory (those with a ``.pub.json``), sorted."""
    directory = pathlib.Path(directory)
    try:
        names = [p.name[: -len(".pub.json")] for p in directory.glob("*.pub.json")]
    except OSError as e:
        raise KeystoreIOError(f"cannot list {directory}: {e.strerror}") from None
    return tuple(sorted(n for n in names if _NAME.fullmatch(n)))


def _pem(der: bytes) -> bytes:
    body = base64.b64encode(der).decode("ascii")
    return ("\n".join([_PEM_BEGIN, *(body[i : i + 64] for i in range(0, len(body), 64)), _PEM_END]) + "\n").encode()


def _read(path: pathlib.Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(_MAX_FILE + 1)
    except FileNotFoundError:
        raise KeyNotFound(f"no {what} {path}") from None
    except OSError as e:
        raise KeystoreIOError(f"cannot read {what} {path}: {e.strerror}") from None
    if len(data) > _MAX_FILE:
        raise KeyFileCorrupt(f"{what} {path} is too large")
    return data


def generate_role_key(
    where: RoleKeyFile, passphrase: bytes, *, scrypt: ScryptParams = _DEFAULT_SCRYPT
) -> CryptoSigner:
    """Generate an Ed25519 role key into ``where`` (refusing to overwrite); return its signer.

    The directory is created 0700. The private file is written first, so a
    ``.pub.json`` never names a key that is not there.
    """
    if not isinstance(passphrase, bytes) or len(passphrase) < MIN_PASSPHRASE_BYTES:
        raise PolicyViolation(f"a role key passphrase needs at least {MIN_PASSPHRASE_BYTES} bytes")
    if where.private_path.exists() or where.public_path.exists():
        raise PolicyViolation(f"role key {where.name} already exists in {where.directory}: refusing to overwrite it")
    private = ed25519.Ed25519PrivateKey.generate()
    info = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                 serialization.NoEncryption())
    public = SSlibKey.from_crypto(private.public_key())
    document = {"format": PUBLIC_KEY_FORMAT, "version": 1, "name": where.name, "keyid": public.keyid,
                "key": public.to_dict()}
    try:
        where.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_file_atomically(where.private_path, _pem(encrypt_private_key_info(info, passphrase, scrypt)), mode=0o600)
        write_file_atomically(where.public_path, json.dumps(document, indent=2, sort_keys=True).encode() + b"\n",
                              mode=0o644)
    except OSError as e:
        raise KeystoreIOError(f"cannot write role key {where.name} to {where.directory}: {e.strerror}") from None
    return CryptoSigner(private, public)


def read_public_key(where: RoleKeyFile) -> SSlibKey:
    """The public key in ``<name>.pub.json`` (no passphrase needed)."""
    data = _read(where.public_path, "role public key")
    try:
        document = json.loads(data)
        if (
            not isinstance(document, dict)
            or document.get("format") != PUBLIC_KEY_FORMAT
            or document.get("version") != 1
        ):
            raise ValueError("not a healthcode-tuf-key v1 file")
        key = SSlibKey.from_dict(document["keyid"], dict(document["key"]))
    except (ValueError, TypeError, KeyError):
        raise KeyFileCorrupt(f"role public key {where.public_path} is malformed") from None
    try:
        key._crypto_key()  # the value parses as the key type it claims
    except (ValueError, TypeError):
        raise KeyFileCorrupt(f"role public key {where.public_path} holds no usable key") from None
    return key


def load_role_signer(where: RoleKeyFile, passphrase: bytes) -> CryptoSigner:
    """Decrypt the role key in ``where`` into a ``CryptoSigner`` (checked against its ``.pub.json``)."""
    public = read_public_key(where)
    data = _read(where.private_path, "role key file")
    text = data.decode("ascii", "replace")
    private: Any
    if _PEM_BEGIN in text and _PEM_END in text:
        try:
            der = base64.b64decode("".join(text[text.find(_PEM_BEGIN) + len(_PEM_BEGIN) : text.find(_PEM_END)].split()),
                                   validate=True)
        except (binascii.Error, ValueError):
            raise KeyFileCorrupt(f"role key file {where.private_path} is not PEM") from None
        try:
            info = decrypt_private_key_info(der, passphrase)
        except WrongPassphrase:
            raise WrongPassphrase(f"wrong passphrase for role key {where.name} in {where.directory}") from None
        except KeyFileCorrupt:  # PBKDF2 or another PBES2 scheme: let cryptography try
            info = None
        try:
            if info is not None:
                private = serialization.load_der_private_key(info, password=None)
            else:
                private = serialization.load_pem_private_key(data, password=passphrase)
        except (ValueError, TypeError):
            raise WrongPassphrase(f"wrong passphrase for role key {where.name} in {where.directory}") from None
    else:
        raise KeyFileCorrupt(f"role key file {where.private_path} is not an encrypted PKCS#8 PEM "
                             "(plain private keys are refused)")
    try:
        return CryptoSigner(private, public)
    except Exception:  # KeyMismatchError, an unsupported key type
        raise KeyFileCorrupt(f"role key file {where.private_path} does not hold the key its .pub.json names") from None


# --------------------------------------------------------------------------- keystore-held role keys


class KeystoreRoleSigner(Signer):
    """A TUF signer over a keystore key (file or PKCS#11): ES256 as ``ecdsa-sha2-nistp256``, EdDSA as ``ed25519``."""

    def __init__(self, signer: KeystoreSigner) -> None:
        public = signer.public_key()
        crypto_public = serialization.load_der_public_key(public.spki_der())
        if signer.algorithm is Algorithm.ES256:
            self._der = True
        elif signer.algorithm is Algorithm.EDDSA:
            self._der = False
        else:
            raise UnsupportedKeyAlgorithm("TUF has no SM2 scheme: a role key must be ES256 or EdDSA")
        self._signer = signer
        self._public = SSlibKey.from_crypto(crypto_public)

    @property
    def public_key(self) -> SSlibKey:
        return self._public

    def sign(self, payload: bytes) -> Signature:
        raw = self._signer.sign(payload)
        if self._der:
            raw = encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big"))
        return Signature(self._public.keyid, raw.hex())

    @classmethod
    def from_priv_key_uri(cls, priv_key_uri: str, public_key: Key, secrets_handler=None) -> "KeystoreRoleSigner":
        raise ValueError("KeystoreRoleSigner is built from a keystore signer, not a URI")

    def __repr__(self) -> str:
        return f"<KeystoreRoleSigner keyid={self._public.keyid[:12]} {self._signer!r}>"

