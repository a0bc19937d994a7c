"""The province key-set file (``key-set.json``): read, written atomically, and locked for a change.

The file holds no secret (public keys, windows, keystore handles), so it is
written 0644. Every read-modify-write of it (the ceremonies, KeyAdmin, the
issuer's write-back of its codes-signed counts) holds :func:`key_set_lock`;
readers need none, because the file is replaced atomically.
"""

from __future__ import annotations

import contextlib
import os
import pathlib

from shellkit.files import file_lock, write_file_atomically

from .errors import InvalidKeySet
from .lifecycle import MAX_KEY_SET_BYTES, ProvinceKeySet

__all__ = ["load_key_set", "save_key_set", "key_set_lock"]


def load_key_set(path: os.PathLike | str) -> ProvinceKeySet:
    """Read a key-set file (:class:`~keys.errors.InvalidKeySet` if it is not one)."""
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_SET_BYTES + 1)
    except OSError as e:
        raise InvalidKeySet(f"cannot read key set {path}: {e.strerror}") from None
    return ProvinceKeySet.from_bytes(data)


def save_key_set(path: os.PathLike | str, key_set: ProvinceKeySet) -> None:
    """Write a key-set file atomically (mode 0644: it holds no secret)."""
    write_file_atomically(path, key_set.to_bytes(), mode=0o644)


def key_set_lock(path: os.PathLike | str) -> contextlib.AbstractContextManager[None]:
    """The exclusive lock every read-modify-write of the key-set file at ``path`` holds
    (``<path>.lock``, an advisory ``flock``; the ceremonies, KeyAdmin and the issuer's
    count write-back). Readers need none: the file is replaced atomically."""
    path = pathlib.Path(path)
    return file_lock(path.with_name(path.name + ".lock"))
