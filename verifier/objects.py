"""Content-addressed objects on disk, and the one state file that names them.

Both the trust sync (:mod:`verifier.trustsync`: metadata and key lists) and the
revocation sync (:mod:`verifier.revocation_sync`: shard snapshots and the roles
that list them) keep their verified bytes the same way::

    <directory>/objects/<SHA256>   immutable bytes, named by their SHA-256 (hex)
    <directory>/state.json         the commit point: names the objects in force

Contracts: :meth:`ObjectStore.get` never returns bytes that do not hash to their
name (a file is not trusted for being on disk); :meth:`ObjectStore.commit` writes
the objects first, then replaces the state file atomically
(:func:`shellkit.files.write_file_atomically`: owner-only, fsynced, the directory
too), then deletes the objects no longer named, so a crash at any point leaves the
old state or the new one, each with all its objects.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Container, Mapping
from pathlib import Path

from shellkit.files import write_file_atomically

from .errors import SyncError, TrustDataError

__all__ = ["ObjectStore", "sha256_hex"]


def sha256_hex(data: bytes) -> str:
    """The object id of ``data``: its SHA-256, lower-case hex."""
    return hashlib.sha256(data).hexdigest()


class ObjectStore:
    """``directory``'s objects and state file; ``what`` names them in errors ("trust", "revocation")."""

    def __init__(self, directory: str | os.PathLike[str], *, what: str) -> None:
        self.directory = Path(directory)
        self.objects = self.directory / "objects"
        self.state_path = self.directory / "state.json"
        self.what = what

    def read_state(self) -> bytes | None:
        """The committed state file's bytes; None before the first commit. Raises :class:`SyncError`."""
        try:
            return self.state_path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise SyncError(f"cannot read the {self.what} state: {exc}") from None

    def get(self, object_id: str) -> bytes:
        """The bytes of ``object_id``; :class:`TrustDataError` if missing or not hashing to their name."""
        try:
            data = (self.objects / object_id).read_bytes()
        except OSError as exc:
            raise TrustDataError(f"cached {self.what} object {object_id[:16]} is missing: {exc}") from None
        if sha256_hex(data) != object_id:
            raise TrustDataError(f"cached {self.what} object {object_id[:16]} is corrupt")
        return data

    def intact(self, object_id: str) -> bool:
        """True when :meth:`get` would return the object."""
        try:
            self.get(object_id)
        except TrustDataError:
            return False
        return True

    def commit(self, state: bytes, blobs: Mapping[str, bytes], *, keep: Container[str] | None = None) -> None:
        """Objects first (absent or damaged ones), then the state file, then the objects not in
        ``keep`` (default: ``blobs``) are deleted. Raises ``OSError`` if a write fails; then the
        committed state is the old one."""
        self.objects.mkdir(parents=True, exist_ok=True)
        for object_id, data in blobs.items():
            path = self.objects / object_id
            if not path.exists() or sha256_hex(path.read_bytes()) != object_id:
                write_file_atomically(path, data)
        write_file_atomically(self.state_path, state)
        keep = blobs if keep is None else keep
        for entry in os.scandir(self.objects):
            if entry.name not in keep:
                with contextlib.suppress(OSError):  # a leftover is harmless
                    os.unlink(entry.path)
