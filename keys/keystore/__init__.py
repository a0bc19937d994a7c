"""Keystores: where a province's private keys live, behind one interface.

* :class:`Keystore` / :class:`KeyHandle` (``base.py``): the interface and the
  public name of a key;
* :class:`FileKeystore` (``files.py``): passphrase-encrypted PKCS#8 files
  (scrypt), ES256, EdDSA and SM2; the default (the encrypted-PKCS#8 codec
  it writes and reads is ``pkcs8.py``);
* :class:`Pkcs11Keystore` (``pkcs11.py``): a PKCS#11 token (HSM), ES256 and
  EdDSA, keys never extractable (needs the ``hsm`` extra);
* :func:`open_keystore`: one of them from configuration values.
"""

from __future__ import annotations

import os

from .base import KeyHandle, Keystore, KeystoreSigner
from .files import FileKeystore
from .pkcs8 import ScryptParams
from .pkcs11 import Pkcs11Keystore

__all__ = [
    "KeyHandle",
    "Keystore",
    "KeystoreSigner",
    "FileKeystore",
    "ScryptParams",
    "Pkcs11Keystore",
    "open_keystore",
    "KEYSTORE_KINDS",
]

KEYSTORE_KINDS = ("file", "pkcs11")


def open_keystore(
    kind: str,
    *,
    secret: bytes | str | None,
    directory: os.PathLike | str | None = None,
    module: os.PathLike | str | None = None,
    token: str | None = None,
) -> Keystore:
    """A keystore from configuration: ``"file"`` (``directory``; ``secret`` is the passphrase)
    or ``"pkcs11"`` (``module``, ``token``; ``secret`` is the user PIN)."""
    if kind == "file":
        if directory is None:
            raise ValueError("a file keystore needs a directory")
        return FileKeystore(directory, secret)
    if kind == "pkcs11":
        if module is None or token is None:
            raise ValueError("a PKCS#11 keystore needs a module path and a token label")
        if secret is None:
            raise ValueError("a PKCS#11 keystore needs the token's user PIN")
        return Pkcs11Keystore(module, token, secret)
    raise ValueError(f"unknown keystore kind {kind!r} (one of: {', '.join(KEYSTORE_KINDS)})")
